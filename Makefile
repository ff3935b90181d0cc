# `make run` sets everything up on a fresh machine, then opens the workbench on the demo model.
# `make test` sets up the test environment and runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test setup setup-test demo screenshots bench lint clean

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

run: setup demo
	$(BIN)/mlx-workbench

test: setup-test demo
	$(BIN)/lint-imports
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
