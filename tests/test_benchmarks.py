"""The benchmark scripts still build and run what they time (no timing here): every row of
bench_layers.py has a builder, and the quick rows run one call of each side."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_layers():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_layers

        yield bench_layers
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_row_has_a_builder(bench_layers):
    for case in [*bench_layers.CASES, *bench_layers.QUICK_CASES]:
        assert callable(case.build), case.label


def test_the_quick_rows_run_both_sides(bench_layers):
    for case in bench_layers.QUICK_CASES:
        providers = case.build(case.shape, case.mode, case.layout)
        assert set(providers) == {"torch", "normkit"}, case.label
        for run in providers.values():
            run()
