# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each creates or updates .venv (only when pyproject.toml or constraints.txt changed), then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.normkit-installed
export OMP_NUM_THREADS ?= 2
LINT_PATHS := $(wildcard src tests benchmarks examples)

.PHONY: demo test lint format bench warmup clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,lab,onnx,tensorboard]"
	touch $(STAMP)

# The lab's default experiment (BN paper Figure 1): prints the headline and the report path.
# The side-by-side torch/normkit tutorial is `$(PY) -m normkit demo`.
demo: $(STAMP)
	$(PY) -m normkit lab ics

test: $(STAMP)
	bash .ci/browser-deps
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m normkit warmup --quiet
	$(PY) -m pytest -n 2 --timeout 900

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)

format: $(STAMP)
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

bench: $(STAMP)
	$(PY) -m normkit warmup --quiet
	$(PY) benchmarks/bench_layers.py
	$(PY) benchmarks/bench_models.py --fuse
	$(PY) benchmarks/bench_models.py --compile --models resnet18 mobilenet_v2 efficientnet_b0
	$(PY) benchmarks/bench_model_layers.py
	$(PY) benchmarks/bench_variants.py
	$(PY) benchmarks/bench_tools.py
	$(PY) benchmarks/bench_cold_start.py

warmup: $(STAMP)
	$(PY) -m normkit warmup

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
