"""affine, inference-stats and dropout at a tiny size: files, structure and the facts each
one stands on (gamma = 0 is a fixed point, every batch's average is the cumulative average,
the estimators match torch's running statistics, dropout sits where the docstring says)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.lab import registry
from normkit.lab.errors import LabError
from normkit.lab.experiments import affine, inference_stats
from normkit.lab.models import mlp, norm_layers
from normkit.lab.training import eval_steps

from .helpers import check_run_dir, run_small


# ----------------------------------------------------------------------------- affine
def test_affine_builds_each_configuration_of_gamma_and_beta():
    for variant, (has_affine, gamma, beta, learned) in affine.VARIANTS.items():
        layers = norm_layers(affine.build(variant, 40, 10))
        assert len(layers) == 3
        for bn in layers:
            if not has_affine:
                assert bn.weight is None and bn.bias is None
                continue
            assert torch.all(bn.weight == gamma) and torch.all(bn.bias == beta)
            assert bn.weight.requires_grad is learned and bn.bias.requires_grad


def test_affine_smoke_and_the_gamma_zero_fixed_point(tmp_path):
    result = run_small("affine", tmp_path)
    results = check_run_dir(tmp_path, "affine", ["affine.png"])
    curves, learned = results["metrics"]["test_accuracy"], results["metrics"]["learned"]
    assert list(curves) == list(affine.VARIANTS)
    assert all(len(c) == len(eval_steps(30, 10)) for c in curves.values())
    # gamma = beta... = identity at the start: learnable and affine=False networks agree at step 0.
    assert curves["learnable"][0] == curves["no affine"][0]
    assert learned["no affine"] == []
    # With gamma = 0 no gamma gets a gradient in exact arithmetic (every BN output is the
    # constant beta, so the next BN's input minus its batch mean is 0). In float32 that
    # difference is the rounding of the mean, which x_hat scales by 1/sqrt(eps): torch's
    # kernel (which small layers run) lets gamma drift by ~1e-5, not away from 0.
    for variant in ("gamma 0, beta 1", "gamma fixed at 0"):
        for layer in learned[variant]:
            assert abs(layer["gamma_p15"]) < 1e-4 and abs(layer["gamma_p85"]) < 1e-4
            assert layer["mean_abs_gamma_minus_1"] == pytest.approx(1.0, abs=1e-4)
    assert curves["gamma 0, beta 1"] == curves["gamma fixed at 0"]
    # The learnable gamma and beta do move away from 1 and 0.
    assert all(layer["mean_abs_gamma_minus_1"] > 0 for layer in learned["learnable"])
    assert all(layer["mean_abs_beta"] > 0 for layer in learned["learnable"])
    assert len(result.rows) == 4 and result.rows[1][4] == "-"


# ----------------------------------------------------------------------------- inference-stats
def test_estimators_match_torch_running_statistics():
    """The hook-fed moving and cumulative averages are torch's running_mean/var (momentum
    0.3 and None), and the average of every stored batch equals the cumulative average."""
    model = nn.Sequential(nk.nn.BatchNorm1d(5))
    references = {m: torch.nn.BatchNorm1d(5, momentum=m) for m in (0.3, None)}

    def make(channels):
        return {
            "ema": inference_stats.MovingAverage(channels, 0.3),
            "cumulative": inference_stats.CumulativeAverage(channels),
            "every": inference_stats.EveryBatch(channels),
        }

    (estimators,), handles = inference_stats.attach(model, make)
    generator = torch.Generator().manual_seed(0)
    for i in range(7):
        x = torch.randn(6 + i, 5, generator=generator) * (1 + i) + i
        model(x)
        for bn in references.values():
            bn.train()(x)
    model.eval()(torch.randn(4, 5))  # eval mode: no update
    for name, ref in (("ema", references[0.3]), ("cumulative", references[None])):
        mean, var = estimators[name].estimate()
        torch.testing.assert_close(mean.float(), ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var.float(), ref.running_var, rtol=1e-5, atol=1e-6)
    every_mean, every_var = estimators["every"].estimate()
    cumulative_mean, cumulative_var = estimators["cumulative"].estimate()
    torch.testing.assert_close(every_mean, cumulative_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(every_var, cumulative_var, rtol=1e-12, atol=1e-12)
    assert estimators["every"].values_stored() == 2 * 5 * 7
    assert estimators["ema"].values_stored() == 2 * 5
    # A copy shares the hook function but does not update the original's estimators.
    clone = copy.deepcopy(model).train()
    clone(torch.randn(8, 5))
    assert len(estimators["every"].means) == 7
    for handle in handles:
        handle.remove()


def test_inference_stats_smoke(tmp_path):
    result = run_small("inference-stats", tmp_path)
    results = check_run_dir(tmp_path, "inference-stats", ["inference_stats.png"])
    metrics = results["metrics"]
    steps = eval_steps(20, 10)
    names = [
        "momentum 0.01",
        "momentum 0.5",
        inference_stats.EVERY_BATCH,
        inference_stats.CUMULATIVE,
        inference_stats.RECALIBRATED,
    ]
    assert list(metrics["test_accuracy"]) == names
    channels = 3 * 32  # the CNN's three BatchNorm layers
    assert metrics["values_stored"][inference_stats.EVERY_BATCH] == [
        2 * channels * s for s in steps
    ]
    for name in names:
        if name != inference_stats.EVERY_BATCH:
            assert set(metrics["values_stored"][name]) == {2 * channels}
    every = metrics["test_accuracy"][inference_stats.EVERY_BATCH]
    assert every == metrics["test_accuracy"][inference_stats.CUMULATIVE]
    assert len(result.rows) == len(names)
    assert "1.10 MiB" not in result.headline  # smoke: 20 steps, not 1500
    assert inference_stats._bytes(2 * channels * 1500 * 4) == "1.10 MiB"


def test_inference_stats_momentum_option():
    exp = registry.get("inference-stats")
    with pytest.raises(LabError, match=r"each momentum must be in \(0, 1\]"):
        exp.config(options={"momenta": (0.1, 1.5)}).validate(exp)


# ----------------------------------------------------------------------------- dropout
def test_mlp_puts_dropout_after_the_activation_and_the_norm():
    model = mlp(40, 10, (16, 16), activation="relu", norm="bn", dropout=0.3)
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "Flatten",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert model[4].p == 0.3
    with pytest.raises(LabError, match="dropout must be in"):
        mlp(40, 10, (16,), dropout=1.0)


def test_dropout_smoke(tmp_path):
    result = run_small("dropout", tmp_path)
    results = check_run_dir(tmp_path, "dropout", ["dropout.png"])
    metrics = results["metrics"]
    assert metrics["seeds"] == 2 and metrics["p"] == 0.2
    steps = eval_steps(20, 10)
    for variant, curves in metrics["curves"].items():
        assert len(curves["train_accuracy"]) == 2
        assert all(len(run) == len(steps) for run in curves["test_accuracy"])
        final = metrics["final"][variant]
        for train_acc, test_acc, gap in zip(
            final["train"], final["test"], final["gap"], strict=True
        ):
            assert gap == pytest.approx(train_acc - test_acc)
    # The four networks of a seed share their initial Linear weights: without BN (no running
    # statistics) dropout is off in eval mode, so at step 0 they are the same function.
    none, drop = metrics["curves"]["none"], metrics["curves"]["dropout"]
    assert [run[0] for run in none["test_accuracy"]] == [run[0] for run in drop["test_accuracy"]]
    assert len(result.records) == 4 * 2 * len(steps)


def test_dropout_option_errors():
    exp = registry.get("dropout")
    with pytest.raises(LabError, match=r"--p must be a number in \(0, 1\)"):
        exp.config(options={"p": 1.5}).validate(exp)
    with pytest.raises(LabError, match="--seeds must be a positive integer"):
        exp.config(options={"seeds": 0}).validate(exp)
