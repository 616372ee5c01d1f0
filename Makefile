# Set-up is idempotent: the venv is made once and the install re-runs only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-kernels test-slow test-min lint format demo reproduce bench clean

setup: $(STAMP)

# pyproject.toml declares ranges; constraints.txt is the one exact set CI tests (torch==2.13.0,
# the CPU build, included: it must be in the same pip command, or pip fetches a CUDA build).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: setup
	$(BIN)/ruff check src tests benchmarks scripts experiments/scripts
	$(BIN)/ruff format --check src tests benchmarks scripts experiments/scripts
	$(BIN)/python -m pytest

# The learning and precision tests again on torch's portable kernels (no AVX2/AVX512): float
# rounding differs between kernel sets, so a margin that holds only on this machine's kernels
# shows here before it fails on another CPU. CI runs it after `make test`.
test-kernels: setup
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -m "numerics and not slow"

test-slow: setup
	$(BIN)/python -m pytest -m slow

# The suite against the lowest versions pyproject.toml declares (not in CI): a separate venv,
# installed with constraints that pin each declared lower bound (scripts/lowest_constraints.py).
MIN_VENV := .venv-min
test-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(PYTHON) scripts/lowest_constraints.py > $(MIN_VENV)/constraints-min.txt
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-input -c $(MIN_VENV)/constraints-min.txt -e ".[dev]"
	$(MIN_VENV)/bin/python -m pip list --disable-pip-version-check
	$(MIN_VENV)/bin/python -m pytest $(MIN_TESTS)

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
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache
