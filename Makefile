# Set-up is idempotent: the venv is made once and the install re-runs only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow lint format demo reproduce bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -e ".[dev]"
	touch $(STAMP)

test: setup
	$(BIN)/ruff check src tests benchmarks scripts experiments/scripts
	$(BIN)/ruff format --check src tests benchmarks scripts experiments/scripts
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts experiments/scripts
	$(BIN)/ruff format --check src tests benchmarks scripts experiments/scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts experiments/scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts experiments/scripts

demo: setup
	$(BIN)/upo demo

reproduce: setup
	bash scripts/reproduce.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
