# Entry points for people and CI: `make run` to try ingle, `make test` and `make check` to check it.
# Everything installs into .venv; nothing touches the system Python.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install, so `make` re-installs only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv install links test check run bench clean vsix bench-lsp bench-api bench-bots bench-quality bench-quality-ts bench-speculative bench-deterministic bench-kv-cache bench-repack bench-idle-caches

venv install: $(INSTALLED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# llama-cpp-python is built from source here (6-7 minutes on 2 cores, once; pip
# caches the wheel). CMAKE_ARGS and FORCE_CMAKE pass through from the environment,
# e.g. `CMAKE_ARGS="-DGGML_CUDA=on" make install` for a CUDA build.
#
# The editable install uses setuptools' strict mode: build/__editable__.ingle-*/ingle/ is a tree of links
# to the files in core/ adapters/ lsp/ bots/, which editors and static tools (pyright, mypy) read like any
# installed package. The default mode serves `ingle.*` through an import hook that only Python runs.
# setuptools 77+ goes into the venv itself because `links` re-links without build isolation.
STRICT := --config-settings editable_mode=strict
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install 'setuptools>=77'
	$(BIN)/python -m pip install -e '.[test,dev]' $(STRICT)
	touch $@

# A link tree holds the modules that existed when it was made: re-link when one is added or removed
# (a few seconds; `make test` and `make check` do it, run `make links` before calling pytest directly).
MODULES := build/ingle-modules.txt
links: $(INSTALLED)
	@find core adapters lsp bots -name '*.py' -not -path '*/node_modules/*' | LC_ALL=C sort >$(MODULES).new
	@if cmp -s $(MODULES).new $(MODULES); then rm $(MODULES).new; else \
		PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install -q --no-deps \
			--no-build-isolation -e . $(STRICT) && mv $(MODULES).new $(MODULES); fi

test: links
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Lint, format and types, at zero findings (rules and the reasons for any switched off: pyproject.toml).
# `ruff format` and `ruff check --fix` fix most of what the first two report.
check: links
	$(BIN)/ruff format --check
	$(BIN)/ruff check
	$(BIN)/basedpyright

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

# Completion quality on holes in pinned PyPI packages, per context source, vs llama-server with llama.vim's shape.
bench-quality: $(INSTALLED)
	$(BIN)/python bench/completion_quality.py

# The same on holes in pinned npm packages' TypeScript sources (window only, all context, llama-server).
bench-quality-ts: $(INSTALLED)
	$(BIN)/python bench/completion_quality.py --language typescript

# The HTTP API against the engine in-process, then the agent APIs (Messages, Responses, tool calls).
bench-api: $(INSTALLED)
	$(BIN)/python bench/api.py
	$(BIN)/python bench/api_agents.py

# ingle vs llama-server (-np 8, and with its ngram-simple speculation): clients, code edits, one stream vs llama-bench.
bench-speculative: $(INSTALLED)
	$(BIN)/python bench/vs_llama_server.py

bench-deterministic: $(INSTALLED)
	$(BIN)/python bench/deterministic.py

# kv_cache_type f16, q8_0 and q4_0 side by side with bare decodes: prompt reading, one-token and guess steps.
bench-kv-cache: $(INSTALLED)
	$(BIN)/python bench/kv_cache.py

# llama.cpp's weight repacking on and off: speed, and whether guessed rows compute as alone. It needs a
# llama-cpp-python that repacks on this CPU, put first on PYTHONPATH (see the top of bench/repack.py).
bench-repack: $(INSTALLED)
	$(BIN)/python bench/repack.py

# One stream beside idle conversations in a shared KV pool: their caches parked in RAM, or left in the pool.
bench-idle-caches: $(INSTALLED)
	$(BIN)/python bench/idle_caches.py

# Run as a module: it drives the fake Slack from tests/fakes.
bench-bots: $(INSTALLED)
	$(BIN)/python -m bench.bots_slack
