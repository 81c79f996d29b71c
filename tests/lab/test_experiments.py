"""Each experiment at a tiny size: its files, its numbers' structure, its invariants."""

from __future__ import annotations

import json

import pytest
import torch

from normkit.lab import registry, runner
from normkit.lab.errors import LabError
from normkit.lab.experiments import batch_size as bs
from normkit.lab.experiments import lr as lr_exp
from normkit.lab.experiments._common import pct
from normkit.lab.models import available_norms
from normkit.lab.training import eval_steps

from .helpers import check_report, check_run_dir, run_small

RUNNING_STATS_KINDS = ("bn", "brn", "gbn")


def test_registry_lists_every_experiment():
    assert registry.names() == [
        "ics",
        "batch-size",
        "lr",
        "placement",
        "eval-gap",
        "affine",
        "inference-stats",
        "dropout",
        "sequence",
    ]
    with pytest.raises(LabError, match="did you mean 'eval-gap'"):
        registry.get("evalgap")


# ----------------------------------------------------------------------------- batch-size
def test_batch_size_smoke(tmp_path):
    result = run_small("batch-size", tmp_path)
    results = check_run_dir(tmp_path, "batch-size", ["batch_size.png"])
    norms = available_norms()
    assert results["metrics"]["norms"] == norms
    assert results["metrics"]["batch_sizes"] == [2, 8]
    assert [row[0] for row in result.rows] == [bs.NORM_LABELS[k] for k in norms]
    assert len(result.records) == 2 * len(norms)
    for record in result.records:
        # Same number of examples per run (4 steps x 32), learning rate scaled with B.
        assert record["updates"] * record["batch_size"] == 4 * 32
        assert record["lr"] == pytest.approx(0.05 * record["batch_size"] / 32)
        assert 0 <= record["test_accuracy"] <= 1
        # Train-mode and recalibrated accuracy only for layers with running statistics.
        diagnosed = [record["train_mode_accuracy"], record["recalibrated_accuracy"]]
        if record["norm"] in RUNNING_STATS_KINDS:
            assert all(0 <= v <= 1 for v in diagnosed)
        else:
            assert diagnosed == [None, None]
    diagnosis = results["metrics"]["batch_statistics_diagnosis"]
    assert list(diagnosis) == list(RUNNING_STATS_KINDS)
    assert all(list(per_size) == ["2", "8"] for per_size in diagnosis.values())
    bn2 = diagnosis["bn"]["2"]
    assert any(
        note.startswith("BatchNorm at batch 2:") and pct(bn2["recalibrated_accuracy"]) in note
        for note in result.notes
    )
    assert result.headline.startswith("BatchNorm vs GroupNorm:")


def test_batch_size_subset_reproduces_the_full_sweep(tmp_path):
    """Sub-run seeds do not depend on which other runs happen: bn alone = bn in the sweep."""
    full = run_small("batch-size", tmp_path / "full")
    only = run_small("batch-size", tmp_path / "bn", options={"norms": ("bn",)})
    assert only.metrics["test_accuracy"]["bn"] == full.metrics["test_accuracy"]["bn"]


def test_batch_size_norm_option_errors():
    exp = registry.get("batch-size")
    with pytest.raises(LabError, match="unknown normalization 'xn'"):
        exp.config(options={"norms": ("bn", "xn")}).validate(exp)


def test_batch_size_runs_the_variants_with_their_options(tmp_path):
    """BatchRenorm warms up over a quarter of the run's updates; ghost batches of 16."""
    import normkit.nn
    from normkit.lab.models import make_norm

    renorm = make_norm("brn", 8, (10,), steps=32)
    ghost = make_norm("gbn", 8, (10,))
    assert isinstance(renorm, normkit.nn.BatchRenorm1d) and renorm.warmup_steps == 8
    assert isinstance(ghost, normkit.nn.GhostBatchNorm1d) and ghost.virtual_batch_size == 16
    result = run_small("batch-size", tmp_path, batch_size=(4,), options={"norms": ("brn", "gbn")})
    assert [row[0] for row in result.rows] == ["BatchRenorm", "GhostBatchNorm"]
    assert {r["norm"] for r in result.records} == {"brn", "gbn"}
    assert all(r["updates"] == 32 for r in result.records)  # 4 x 32 examples / batch 4


# ----------------------------------------------------------------------------- lr
def test_lr_smoke(tmp_path):
    result = run_small("lr", tmp_path)
    results = check_run_dir(tmp_path, "lr", ["lr.png"])
    assert results["metrics"]["learning_rates"] == [0.01, 1.0]
    for name in ("without BN", "with BN"):
        assert len(results["metrics"]["test_accuracy"][name]) == 2
    assert [row[0] for row in result.rows] == ["0.01", "1"]


def test_lr_reports_divergence(tmp_path):
    result = run_small("lr", tmp_path, lr=(0.01, 1000.0))
    assert result.metrics["diverged"]["without BN"] == [False, True]
    assert result.rows[1][1] == "diverged"


def test_usable_range_is_contiguous_around_the_best():
    acc = {0.001: 0.5, 0.01: 0.95, 0.1: 0.97, 1.0: 0.1, 10.0: 0.96}
    got = lr_exp._usable(acc, sorted(acc))
    assert got == {"best": 0.97, "best_lr": 0.1, "low": 0.01, "high": 0.1}


# ----------------------------------------------------------------------------- placement
def test_placement_smoke(tmp_path):
    result = run_small("placement", tmp_path, options={"seeds": 2})
    results = check_run_dir(tmp_path, "placement", ["placement.png"])
    steps = eval_steps(20, 10)
    curves = results["metrics"]["test_accuracy"]
    assert set(curves) == {"BN before ReLU", "BN after ReLU", "no norm"}
    for runs in curves.values():
        assert len(runs) == 2 and all(len(r) == len(steps) for r in runs)
    # Shared initial weights: at step 0 (eval mode, BN running stats 0/1, the identity up to
    # 1/sqrt(1 + eps)) the three variants compute nearly the same function.
    for seed in range(2):
        first = [curves[v][seed][0] for v in curves]
        assert max(first) - min(first) <= 0.003
    assert len(result.records) == 3 * 2 * len(steps)


# ----------------------------------------------------------------------------- eval-gap
def test_eval_gap_smoke_and_invariants(tmp_path):
    result = run_small("eval-gap", tmp_path)
    results = check_run_dir(tmp_path, "eval-gap", ["eval_gap.png"])
    curves = results["metrics"]["curves"]
    assert set(curves) == {"0.01", "0.5"}
    train_mode, eval_mode, recal = (
        "train mode (batch statistics)",
        "eval mode (running estimates)",
        "eval mode, recalibrated",
    )
    # The BN momentum changes only the running estimates: training, hence the train-mode
    # curve and the recalibrated network, are identical; eval mode differs.
    assert curves["0.01"][train_mode] == curves["0.5"][train_mode]
    assert curves["0.01"][recal] == curves["0.5"][recal]
    assert curves["0.01"][eval_mode] != curves["0.5"][eval_mode]
    assert len(result.records) == 2 * len(eval_steps(20, 10))


def test_eval_gap_momentum_option():
    exp = registry.get("eval-gap")
    parse = next(o for o in exp.options if o.name == "momenta").parse
    assert parse("0.1, none") == (0.1, None)
    with pytest.raises(LabError, match=r"each momentum must be in \(0, 1\]"):
        exp.config(options={"momenta": (0.0,)}).validate(exp)
    with pytest.raises(LabError, match="--momenta: cannot parse"):
        parse("0.1,fast")


# ----------------------------------------------------------------------------- all
@pytest.mark.slow
def test_all_smoke_writes_one_combined_report(tmp_path):
    results = runner.run_all(tmp_path, smoke=True)
    assert [r.experiment for r in results] == registry.names()
    summary = json.loads((tmp_path / "results.json").read_text())
    assert [e["experiment"] for e in summary["experiments"]] == registry.names()
    figures = [
        "ics.png",
        "batch_size.png",
        "lr.png",
        "placement.png",
        "eval_gap.png",
        "affine.png",
        "inference_stats.png",
        "dropout.png",
        "sequence.png",
    ]
    parsed = check_report(tmp_path / "report.html", figures)
    assert len(parsed.images) == len(figures)
    for r in results:
        assert (tmp_path / r.experiment / "report.html").is_file()


def test_all_validates_every_config_before_running(tmp_path):
    with pytest.raises(LabError, match="ics takes one --lr value"):
        runner.run_all(tmp_path / "out", smoke=True, lr=(0.1, 0.2))
    assert not (tmp_path / "out").exists()
    assert torch.get_num_threads() >= 1
