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


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _harness

        yield _harness
    finally:
        sys.path.remove(str(BENCHMARKS))


def _binomial_below(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) < k), summed directly."""
    from math import comb

    return sum(comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 15, 40, 101, 1000])
def test_the_median_interval_is_the_widest_order_statistics_with_the_coverage(harness, n):
    values = [float(v) for v in range(100, 100 + n)][::-1]  # given unsorted
    low, high, coverage = harness.median_interval(values)
    k = int(low) - 100 + 1  # low is the k-th smallest
    assert high == 100 + n - k
    assert coverage == pytest.approx(1 - 2 * _binomial_below(n, k))
    if n >= 6:
        assert coverage >= 0.95
        # one order statistic further in would fall below 95%
        assert 1 - 2 * _binomial_below(n, k + 1) < 0.95
    else:
        assert (low, high) == (100, 100 + n - 1)


def test_the_median_interval_of_many_rounds_follows_the_normal_approximation(harness):
    # bench_layers times tiny calls for a second: tens of thousands of rounds
    n = 50_001
    low, high, coverage = harness.median_interval(range(n))
    half_width = 1.96 * n**0.5 / 2
    assert abs((n - 1) / 2 - low - half_width) <= 2 and low + high == n - 1
    assert coverage == pytest.approx(0.95, abs=0.002)
    exact = harness.median_interval(range(1000))  # the exact rule at the boundary
    assert exact[0] == pytest.approx(1000 / 2 - 1.96 * 1000**0.5 / 2, abs=2)


def test_the_median_interval_of_15_rounds_is_the_4th_and_12th(harness):
    # the textbook table: n = 15 -> (x_(4), x_(12)), coverage 96.5%
    low, high, coverage = harness.median_interval(range(1, 16))
    assert (low, high) == (4, 12)
    assert coverage == pytest.approx(0.9648, abs=1e-4)


def test_paired_ratio_pairs_rounds_and_cancels_drift(harness):
    # The machine slows down 2x over the run; the other provider is always 10% faster.
    drift = [1.0 + i / 10 for i in range(20)]
    torch_t = harness.Timing.of([d * 1e-3 for d in drift])
    ours = harness.Timing.of([d * 1e-3 / 1.1 for d in drift])
    ratio = harness.paired_ratio(torch_t, ours)
    assert ratio.median == pytest.approx(1.1)
    assert ratio.low == pytest.approx(1.1) and ratio.high == pytest.approx(1.1)
    assert ratio.verdict(1.0) == "met"
    assert ratio.verdict(1.2) == "MISSED"
    with pytest.raises(ValueError, match="one time_interleaved call"):
        harness.paired_ratio(torch_t, harness.Timing.of([1e-3]))


def test_a_verdict_inside_the_interval_says_within_noise(harness):
    ratio = harness.Ratio(median=0.98, low=0.95, high=1.02, coverage=0.96)
    assert ratio.verdict(1.0) == "MISSED (within noise)"
    assert ratio.verdict(0.9) == "met"
    assert harness.Ratio(1.01, 0.97, 1.05, 0.96).verdict(1.0) == "met (within noise)"


def test_append_csv_adds_new_columns_without_shifting_old_rows(harness, tmp_path):
    path = tmp_path / "rows.csv"
    harness.append_csv(path, [{"a": 1, "b": 2}])
    harness.append_csv(path, [{"a": 3, "c": 4, "b": 5}])
    harness.append_csv(path, [{"a": 6}])
    import csv

    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["a", "b", "c"]
    assert rows == [
        {"a": "1", "b": "2", "c": ""},
        {"a": "3", "b": "5", "c": "4"},
        {"a": "6", "b": "", "c": ""},
    ]


def test_bench_model_layers_times_every_converted_layer_of_a_model():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_model_layers

        from tests.zoo import ecosystem

        ecosystem.install()
        try:
            rows, delta = bench_model_layers.bench_model("efficientnet_b0", 1, size="test")
            model = bench_model_layers.ZOO["efficientnet_b0"].build("test")
        finally:
            ecosystem.uninstall()
    finally:
        sys.path.remove(str(BENCHMARKS))
    timm_norms = [m for m in model.modules() if type(m).__name__ == "BatchNormAct2d"]
    train = [r for r in rows if r["mode"] == "train"]
    assert {r["layer"] for r in rows} == {"BatchNormAct2d"}
    assert {r["normkit_layer"] for r in rows} == {"BatchNormAct2d"}
    assert sum(r["count"] for r in train) == len(timm_norms) > 0
    assert len(train) == len(rows) - len(train)  # every layer timed in both modes
    assert all(r["ratio_ci_low"] <= r["paired_ratio"] <= r["ratio_ci_high"] for r in rows)
    assert set(delta) == {"eval", "train"}


#: Round times (ms) reported for each provider of bench_models' test run: each provider's
#: ratio to torch eager, and compile(normkit)'s to compile(torch) (4.0 / 2.0 = 2.0, where
#: the ratio to torch eager is 0.5), are known.
FAKE_ROUNDS_MS = {"torch": 1.0, "compile(torch)": 4.0, "compile(normkit)": 2.0}


def test_bench_models_times_every_provider_and_pairs_compiled_with_compiled(monkeypatch):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _harness
        import bench_models

        from tests.zoo import ecosystem

        def timed_then_faked(steps, repeats, warmup):
            real = _harness.time_interleaved(steps, repeats=repeats, warmup=warmup)
            return {
                name: _harness.Timing.of([FAKE_ROUNDS_MS.get(name, 1.0) * 1e-3] * repeats)
                for name in real
            }

        monkeypatch.setattr(bench_models, "time_interleaved", timed_then_faked)
        ecosystem.install()
        try:
            rows = bench_models.bench_model(
                "resnet18", True, 3, size="test", compile_backend="aot_eager"
            )
        finally:
            ecosystem.uninstall()
    finally:
        sys.path.remove(str(BENCHMARKS))
    providers = {(r["mode"], r["provider"]) for r in rows}
    compiled = ["compile(torch)", "compile(normkit)"]
    assert providers == {
        *(("train", p) for p in ["torch", "normkit", *compiled]),
        *(("eval", p) for p in ["torch", "normkit", "normkit+fold", *compiled]),
    }
    for r in rows:
        assert r["ratio_ci_low"] <= r["paired_ratio"] <= r["ratio_ci_high"]
        assert 0 < r["norm_share"] <= r["norm_act_share"] < 1
        assert r["ceiling"] == pytest.approx(1 / (1 - r["norm_share"]), abs=2e-3)
        expected = 1.0 / FAKE_ROUNDS_MS.get(r["provider"], 1.0)
        assert r["paired_ratio"] == r["ratio_ci_low"] == r["ratio_ci_high"] == expected
        assert r["ratio_vs_torch"] == expected
        paired_with_compiled = (
            "2.000x [2.000, 2.000]" if r["provider"] == "compile(normkit)" else ""
        )
        assert r["vs_compile_torch"] == paired_with_compiled


@pytest.mark.parametrize(
    ("old", "new", "merged"),
    [
        (None, {"min": 4, "max": None}, {"min": 4, "max": None}),  # unmeasured: numba anywhere
        ({"min": 4, "max": None}, {"min": 16, "max": None}, {"min": 16, "max": None}),
        ({"min": 4, "max": 64}, {"min": 16, "max": None}, {"min": 16, "max": 64}),
        ({"min": 4, "max": 8}, {"min": 16, "max": None}, {"min": 0, "max": 0}),  # disjoint
        ({"min": 0, "max": 0}, {"min": 1, "max": None}, {"min": 0, "max": 0}),
        ({"min": 1, "max": None}, {"min": 0, "max": 0}, {"min": 0, "max": 0}),
    ],
)
def test_merged_crossover_ranges_keep_only_what_both_measured(old, new, merged):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_crossover
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert bench_crossover.intersect(old, new) == merged
