# `make run` sets everything up on a fresh machine, then opens the workbench on the demo model.
# `make test` sets up the test environment and runs the whole suite; `make lint`: ruff and mypy.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test setup setup-test demo openblas screenshots bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(STAMP)

setup-test: $(TSTAMP)

demo: $(STAMP)
	$(BIN)/mlx-workbench models fetch-demo

# MLX's CPU build on Linux is ~20x faster at prefill with the system OpenBLAS (DESIGN.md). It is
# installed when this user may (root, or sudo without a password); otherwise the app says at start
# which command installs it.
openblas:
	@if [ "$$(uname -s)" = Linux ] && command -v apt-get >/dev/null \
	    && ! PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q libopenblas.so.0; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=no; fi; \
	  if [ "$$SUDO" = no ]; then \
	    echo "note: no system OpenBLAS (local models ~20x slower). Fix: sudo apt-get install libopenblas0-pthread"; \
	  else \
	    echo "installing the system OpenBLAS (libopenblas0-pthread)"; \
	    { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq libopenblas0-pthread >/dev/null; } \
	      || echo "note: installing OpenBLAS failed; local models will be ~20x slower"; \
	  fi; \
	fi

run: setup openblas demo
	$(BIN)/mlx-workbench

# ruff (rules and formatting) and mypy, configured in pyproject.toml; import-linter for the layers.
lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint demo
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The README's pictures, from the same fixed scenes as the snapshot tests (tui/screenshots.py).
screenshots: setup-test
	rm -f screenshots/*.svg
	$(BIN)/python -m tui.screenshots screenshots

bench: setup demo
	$(BIN)/python bench/local.py
	$(BIN)/python bench/listener.py

clean:
	rm -rf $(VENV) .pytest_cache
