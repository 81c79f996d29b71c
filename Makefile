# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each creates or updates .venv (only when pyproject.toml or constraints.txt changed), then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.normkit-installed
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint format bench warmup clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,lab]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m normkit demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples
	$(PY) -m normkit warmup --quiet
	$(PY) -m pytest -n 2 --timeout 900

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks examples
	$(PY) -m ruff check --fix src tests benchmarks examples

bench: $(STAMP)
	$(PY) -m normkit warmup --quiet
	$(PY) benchmarks/bench_layers.py
	$(PY) benchmarks/bench_cold_start.py

warmup: $(STAMP)
	$(PY) -m normkit warmup

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
