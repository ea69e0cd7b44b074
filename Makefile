# Entry points for people and CI: `make run` to try ingle, `make test` to check it.
# Everything installs into .venv; nothing touches the system Python.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install, so `make` re-installs only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv install test run bench clean vsix bench-lsp bench-api bench-bots

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

# Pulls the default model (once; later pulls find it in the store) and serves the
# HTTP API on 127.0.0.1:11435 until Ctrl-C. Try it from another terminal with
# `.venv/bin/ingle run`, which goes through the running daemon.
run: $(INSTALLED)
	$(BIN)/ingle pull default
	$(BIN)/ingle serve

bench: $(INSTALLED)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The VS Code extension, packaged as lsp/vscode/ingle.vsix (needs node 20 and npm).
vsix: lsp/vscode/ingle.vsix

lsp/vscode/ingle.vsix: lsp/vscode/package.json lsp/vscode/package-lock.json lsp/vscode/tsconfig.json lsp/vscode/src/extension.ts
	cd lsp/vscode && npm ci --no-audit --no-fund && npm run compile && npm run package

# Typing replay through `ingle lsp` vs llama-server's /infill (builds llama-server once into ~/.cache/ingle-bench).
bench-lsp: $(INSTALLED)
	$(BIN)/python bench/lsp_typing.py

bench-api: $(INSTALLED)
	$(BIN)/python bench/api.py

# Run as a module: it drives the fake Slack from tests/fakes.
bench-bots: $(INSTALLED)
	$(BIN)/python -m bench.bots_slack
