# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv with pip when it is missing and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# A stamp per extras set: re-install when pyproject.toml changes.
STAMP   = $(VENV)/.installed

.PHONY: demo test lint install clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mmalign demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
