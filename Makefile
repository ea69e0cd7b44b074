# Entry points for people and CI: `make run` to try ingle, `make test` to check it.
# Everything installs into .venv; nothing touches the system Python.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install, so `make` re-installs only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv install test run bench clean

venv install: $(INSTALLED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# llama-cpp-python is built from source here (6-7 minutes on 2 cores, once; pip
# caches the wheel). CMAKE_ARGS and FORCE_CMAKE pass through from the environment,
# e.g. `CMAKE_ARGS="-DGGML_CUDA=on" make install` for a CUDA build.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Until the HTTP API lands this pulls the default model and opens an interactive
# chat; then it becomes `ingle pull default` followed by `ingle serve`.
run: $(INSTALLED)
	$(BIN)/ingle pull default
	$(BIN)/ingle run

bench: $(INSTALLED)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
