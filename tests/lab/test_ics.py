"""The ics experiment (BN paper Figure 1) at a tiny size, and the effect it must show."""

from __future__ import annotations

import pytest

from normkit.lab import registry, runner
from normkit.lab.training import eval_steps

from .helpers import check_run_dir, run_small


def test_ics_smoke_outputs(tmp_path):
    result = run_small("ics", tmp_path)
    results = check_run_dir(tmp_path, "ics", ["ics.png"])
    metrics = results["metrics"]
    steps = eval_steps(30, 10)
    assert metrics["steps"] == steps
    for name in ("without BN", "with BN"):
        curve = metrics["networks"][name]
        assert set(curve) == {"test_accuracy", "p15", "p50", "p85"}
        for values in curve.values():
            assert len(values) == len(steps)
        assert all(0 <= a <= 1 for a in curve["test_accuracy"])
        assert all(
            a <= b <= c for a, b, c in zip(curve["p15"], curve["p50"], curve["p85"], strict=True)
        )
    # Same initialisation: at step 0 BN (running stats 0/1) is the identity up to eps, so
    # both networks make the same predictions and the unit sees the same inputs.
    plain, bn = metrics["networks"]["without BN"], metrics["networks"]["with BN"]
    assert plain["test_accuracy"][0] == bn["test_accuracy"][0]
    for p in ("p15", "p50", "p85"):
        assert plain[p][0] == pytest.approx(bn[p][0], abs=1e-4)
    assert "with BN" in result.headline and "without" in result.headline
    # 2 networks x 4 evaluations in the CSV.
    assert len(result.records) == 8


def test_ics_shows_the_bn_effect(tmp_path):
    """At step 100 (plain SGD, lr 0.5) the BN network has learned; the plain one has not."""
    exp = registry.get("ics")
    cfg = exp.config(steps=100, eval_every=50)
    result = runner.run_experiment("ics", cfg, tmp_path, report=False)
    curves = result.metrics["networks"]
    assert curves["with BN"]["test_accuracy"][-1] > 0.85
    assert curves["without BN"]["test_accuracy"][-1] < 0.5
    assert result.metrics["headline_step"] == 100


def test_ics_same_seed_same_numbers(tmp_path):
    a = run_small("ics", tmp_path / "a")
    b = run_small("ics", tmp_path / "b")
    assert a.metrics == b.metrics and a.rows == b.rows and a.headline == b.headline
    assert (tmp_path / "a" / "results.csv").read_bytes() == (
        tmp_path / "b" / "results.csv"
    ).read_bytes()
    c = run_small("ics", tmp_path / "c", seed=1)
    assert c.metrics != a.metrics


def test_ics_unit_option(tmp_path):
    a = run_small("ics", tmp_path / "a", options={"unit": 7})
    assert a.metrics["unit"] == 7
    b = run_small("ics", tmp_path / "b")
    assert a.metrics["networks"]["with BN"]["p50"] != b.metrics["networks"]["with BN"]["p50"]
