"""doctor(): each classic mistake is found, with evidence and a fix; clean models pass."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import CHECKS, doctor, recalibrate
from tests.tools.models import ResNetish, TransformerBlock, keras_cnn, mlp


def _codes(findings, severity=None):
    return [f.code for f in findings if severity is None or f.severity == severity]


def _trained_resnet(ns=nk.nn):
    model = ResNetish(ns)
    g = torch.Generator().manual_seed(0)
    recalibrate(model, [torch.randn(16, 3, 16, 16, generator=g) for _ in range(4)])
    return model.eval()


@pytest.mark.parametrize("ns", [nn, nk.nn], ids=["torch", "normkit"])
def test_clean_models_have_no_problem(ns):
    model = _trained_resnet(ns)
    findings = doctor(model, torch.randn(16, 3, 16, 16))
    assert list(findings) == [], str(findings)
    assert str(findings) == "doctor: no normalization problem found"
    assert list(doctor(TransformerBlock(ns).eval(), torch.randn(4, 6, 16))) == []


def test_read_only():
    model = _trained_resnet().train()
    model.layers[0].bn1.eval()
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    doctor(model, torch.randn(8, 3, 16, 16))
    assert [m.training for m in model.modules()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_bias_before_bn_and_finding_fields():
    findings = doctor(keras_cnn(nk.nn).eval(), checks=["bias-before-bn"])
    # The same problem in two layers is one finding naming both.
    assert [(f.layer, f.severity) for f in findings] == [
        ("2 layers: 0 (Conv2d), 4 (Conv2d)", "warning"),
    ]
    f = findings[0]
    assert f.layers == ["0 (Conv2d)", "4 (Conv2d)"] and len(f.details) == 2
    assert "1 (BatchNorm2d)" in f.details[0] and "5 (BatchNorm2d)" in f.details[1]
    assert "1 (BatchNorm2d)" in f.evidence and "bias=False" in f.fix
    assert {"code", "severity", "layer", "evidence", "fix", "layers", "details"} == set(
        findings.to_dicts()[0]
    )
    assert "bias-before-bn" in findings.table()
    assert "bias-before-bn" not in _codes(doctor(mlp(nn).eval(), checks=["bias-before-bn"])[1:])


def test_train_mode_and_bn_training_in_eval():
    model = _trained_resnet()
    assert _codes(doctor(model.train())) == ["train-mode"]
    nk.tools.freeze(model)  # frozen BN are fine in a training model
    assert _codes(doctor(model)) == []
    nk.tools.unfreeze(model)
    model.eval()
    model.stem[1].train()
    findings = doctor(model)
    assert (
        _codes(findings) == ["bn-training-in-eval"] and findings[0].layer == "stem.1 (BatchNorm2d)"
    )


def test_small_batch():
    model = _trained_resnet()
    findings = doctor(model, torch.randn(4, 3, 16, 16), checks=["small-batch"])
    assert len(findings) == 1 and len(findings[0].layers) == 6
    assert "4 sample(s)" in findings[0].evidence and findings[0].layer.startswith("6 layers: ")
    mlp_model = mlp(nk.nn).eval()
    recalibrate(mlp_model, [torch.randn(32, 20)])
    findings = doctor(mlp_model, torch.randn(1, 20))
    assert _codes(findings, "error") == ["small-batch"]
    assert len(findings.errors[0].layers) == 2
    gap = [f for f in findings if f.code == "train-eval-gap"]
    assert gap[0].severity == "info" and "not measured" in gap[0].evidence


def test_never_trained_and_momentum():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1, bias=False),
        nn.BatchNorm2d(4, momentum=0.99),
        nk.nn.BatchNorm2d(4, momentum=0.9),
    )
    findings = doctor(model.eval())
    assert _codes(findings) == ["never-trained", "keras-momentum"]
    assert [len(f.layers) for f in findings] == [2, 2]
    momentum = findings[1]
    assert "momentum=0.01" in momentum.fix and "torch's momentum=0.01" in momentum.evidence
    assert "momentum=0.1" in momentum.details[1]  # the second layer's own fix
    model[1].momentum = model[2].momentum = 0.1
    recalibrate(model, [torch.randn(8, 3, 4, 4)])
    assert _codes(doctor(model)) == []


def test_nonfinite_running_stats():
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.running_var[1] = float("nan")
        bn.running_var[2] = -1.0
        bn.num_batches_tracked.fill_(5)
    findings = doctor(nn.Sequential(bn).eval())
    assert _codes(findings) == ["nonfinite-stats"] and findings[0].severity == "error"
    assert "1 non-finite and 1 negative" in findings[0].evidence


def test_train_eval_gap_and_stats_mismatch_localize_the_shift():
    model = _trained_resnet()
    shifted = torch.randn(16, 3, 16, 16) * 5 + 3  # another domain / wrong preprocessing
    findings = doctor(model, shifted)
    assert "train-eval-gap" in _codes(findings)
    mismatched = [f.layer for f in findings if f.code == "stats-mismatch"]
    assert mismatched and mismatched[0] == "stem.1 (BatchNorm2d)"
    assert "running std" in findings[_codes(findings).index("stats-mismatch")].evidence
    recalibrate(model, [shifted])  # AdaBN: adapt to it
    assert "train-eval-gap" not in _codes(doctor(model, shifted))


def test_dropout_before_bn():
    bad = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Dropout(0.5), nn.BatchNorm1d(8))
    findings = doctor(bad.eval(), checks=["dropout-before-bn"])
    assert findings[0].layer == "2 (BatchNorm1d)" and "p=0.5" in findings[0].evidence
    good = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.Dropout(0.5))
    assert not doctor(good.eval(), checks=["dropout-before-bn"])


def test_group_norm_groups():
    model = nn.Sequential(
        nn.GroupNorm(32, 64), nk.nn.GroupNorm(8, 8), nn.GroupNorm(32, 256), nn.GroupNorm(1, 8)
    )
    findings = doctor(model, checks=["group-norm-groups"])
    assert [(f.layer, f.severity) for f in findings] == [
        ("1 (GroupNorm)", "warning"),
        ("0 (GroupNorm)", "info"),
    ]
    assert "num_groups (32) is larger than the channels per group (2)" in findings[1].evidence
    assert "GroupNorm(8, 64)" in findings[1].fix


def test_batch_stats_eps_and_no_norms():
    model = nn.Sequential(
        nn.BatchNorm1d(3, track_running_stats=False), nn.LayerNorm(3, eps=1e-8).half()
    )
    assert _codes(doctor(model.eval())) == ["batch-stats-in-eval", "eps-below-dtype"]
    assert _codes(doctor(nn.Linear(3, 3))) == ["no-norm-layers"]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown check\(s\) \['nope'\]"):
        doctor(nn.BatchNorm1d(3), checks=["nope"])
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module"):
        doctor("model")
    with pytest.raises(ValueError, match="expected an input size"):
        doctor(nn.BatchNorm1d(3), "batch")
    with pytest.raises(ValueError, match=r"fails on the example batch.*expected 3 channels"):
        doctor(nn.Sequential(nk.nn.BatchNorm1d(3)), torch.randn(4, 5))
    assert len(CHECKS) >= 14


def test_input_size_as_example():
    findings = doctor(_trained_resnet(), (2, 3, 16, 16), checks=["small-batch"])
    assert findings and findings[0].code == "small-batch"
