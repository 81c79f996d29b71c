"""recalibrate(): running statistics become the statistics of the data seen."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import EMA, recalibrate, recalibration
from normkit.tools.recalibrate import NothingToRecalibrateWarning
from tests.conftest import assert_close
from tests.tools.models import ResNetish, mlp, randomize_norm_state

NAMESPACES = {"torch": nn, "normkit": nk.nn}


def _batches(shape_tail, sizes, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn((n, *shape_tail), generator=g, dtype=dtype) * (1 + i) + 2 * i)
        for i, n in enumerate(sizes)
    ]


def _channel_stats(x):
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=True)


@pytest.mark.parametrize("library", sorted(NAMESPACES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "bn_cls, tail", [("BatchNorm1d", (4,)), ("BatchNorm1d", (4, 6)), ("BatchNorm2d", (4, 3, 5))]
)
def test_population_statistics_equal_the_concatenated_data(library, dtype, bn_cls, tail):
    bn = getattr(NAMESPACES[library], bn_cls)(4, momentum=0.3).to(dtype)
    batches = _batches(tail, [3, 11, 5, 2], dtype)
    _, report = recalibrate(bn, batches, return_report=True)
    mean, var = _channel_stats(torch.cat(batches))
    assert_close(bn.running_mean, mean, dtype=dtype)
    assert_close(bn.running_var, var, dtype=dtype)
    assert int(bn.num_batches_tracked) == 4 and bn.momentum == 0.3 and bn.training
    assert report.layers[0].batches == 4 and report.layers[0].values_per_channel == sum(
        b.shape[0] for b in batches
    ) * (b := batches[0]).numel() // (b.shape[0] * 4)


def test_split_invariance():
    data = _batches((3, 4, 4), [40])[0]
    results = []
    for sizes in ([40], [1, 39], [13, 13, 14], [7] * 5 + [5]):
        bn = nn.BatchNorm2d(3)
        recalibrate(bn, list(torch.split(data, sizes)))
        results.append((bn.running_mean.clone(), bn.running_var.clone()))
    for mean, var in results[1:]:
        assert_close(mean, results[0][0])
        assert_close(var, results[0][1])


@pytest.mark.parametrize("library", sorted(NAMESPACES))
def test_conv_then_bn_and_state_restored(library):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        NAMESPACES[library].BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
    )
    model.train()
    model[1].eval()  # mixed flags must come back as they were
    params = copy.deepcopy(dict(model.named_parameters()))
    batches = _batches((3, 8, 8), [4, 6, 3])
    recalibrate(model, batches)
    with torch.no_grad():
        mean, var = _channel_stats(model[0](torch.cat(batches)))
    assert_close(model[1].running_mean, mean)
    assert_close(model[1].running_var, var)
    assert [m.training for m in model] == [True, False, True, True] and model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]), name
    assert not model[1]._forward_pre_hooks


def test_downstream_layers_see_batch_normalized_inputs_with_dropout_off():
    model = randomize_norm_state(mlp(nn))
    model.insert(3, nn.Dropout(0.9))  # must be off during recalibration
    model.train()
    batches = _batches((20,), [16, 16, 8])
    reference = copy.deepcopy(model).eval()
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.train()
    captured = []
    reference[5].register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        for b in batches:
            reference(b)
    recalibrate(model, batches)
    mean, var = _channel_stats(torch.cat(captured))
    assert_close(model[5].running_mean, mean)
    assert_close(model[5].running_var, var)


def test_cumulative_equals_swa_update_bn():
    model = randomize_norm_state(ResNetish(nn))
    reference = copy.deepcopy(model)
    batches = _batches((3, 8, 8), [4, 6, 5])
    recalibrate(model, batches, strategy="cumulative")
    torch.optim.swa_utils.update_bn(batches, reference)
    for (name, a), (_, b) in zip(
        nk.tools.iter_norm_layers(model), nk.tools.iter_norm_layers(reference), strict=True
    ):
        assert_close(a.running_mean, b.running_mean, what=name)
        assert_close(a.running_var, b.running_var, what=name)


def test_ema_equals_the_layers_own_update():
    bn = randomize_norm_state(nn.Sequential(nn.BatchNorm1d(3, momentum=0.2)))[0]
    reference = copy.deepcopy(bn)
    batches = _batches((3,), [5, 9])
    recalibrate(bn, batches, strategy="ema")
    with torch.no_grad():
        for b in batches:
            reference(b)
    assert_close(bn.running_mean, reference.running_mean)
    assert_close(bn.running_var, reference.running_var)
    bn2 = nn.BatchNorm1d(3)
    recalibrate(bn2, batches, strategy=functools.partial(EMA, momentum=1.0))
    assert_close(bn2.running_var, _channel_stats(batches[-1])[1])


def test_adabn_domain_adaptation():
    """A model calibrated on domain A, recalibrated on domain B, normalizes B in eval."""
    model = nn.Sequential(nn.Linear(5, 8), nk.nn.BatchNorm1d(8, affine=False))
    source = [torch.randn(32, 5) for _ in range(4)]
    target = [torch.randn(32, 5) * 4 + 3 for _ in range(4)]
    recalibrate(model, source)
    model.eval()
    with torch.no_grad():
        shifted = model(torch.cat(target))
        assert shifted.mean(0).abs().max() > 1.0  # BN statistics of A do not fit B
        recalibrate(model, target)
        adapted = model(torch.cat(target))
    assert adapted.mean(0).abs().max() < 1e-4
    assert (adapted.var(0) - 1).abs().max() < 1e-3


def test_resnet_every_layer_reached_and_batch_kinds():
    for ns in NAMESPACES.values():
        model = ResNetish(ns)
        data = [(torch.randn(4, 3, 8, 8), torch.zeros(4)) for _ in range(3)]
        _, report = recalibrate(model, data, num_batches=2, return_report=True)
        assert len(report.layers) == 6 and not report.not_reached
        assert all(r.batches == 2 for r in report.layers)
        assert "mean shift" in str(report)
    bn = nn.BatchNorm1d(2)
    recalibrate(bn, [{"input": torch.randn(4, 2)}])
    assert int(bn.num_batches_tracked) == 1


def test_failure_restores_everything():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    before = copy.deepcopy(model.state_dict())

    def batches():
        yield torch.randn(4, 3)
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        recalibrate(model, batches())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.training and not model[1].training and model[1].momentum == 0.1
    assert not model[1]._forward_pre_hooks


def test_not_reached_layers_and_context_manager():
    model = nn.ModuleDict({"used": nn.BatchNorm1d(2), "unused": nn.BatchNorm1d(2)})
    with recalibration(model) as rec, torch.no_grad():
        model["used"](torch.randn(6, 2) + 5)
    assert rec.report.not_reached == ["unused"]
    assert model["used"].running_mean.min() > 3 and torch.equal(
        model["unused"].running_mean, torch.zeros(2)
    )


def test_errors():
    layer_norm = nn.Sequential(nn.LayerNorm(3))
    before = copy.deepcopy(layer_norm.state_dict())
    with pytest.warns(NothingToRecalibrateWarning, match=r"no BatchNorm layer.*found: LayerNorm"):
        assert recalibrate(layer_norm, [torch.randn(2, 3)]) is layer_norm
    assert all(torch.equal(v, layer_norm.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="no batches were given"):
        recalibrate(nn.BatchNorm1d(3), [])
    with pytest.raises(ValueError, match="unknown strategy 'precise'"):
        recalibrate(nn.BatchNorm1d(3), [torch.randn(2, 3)], strategy="precise")
    with pytest.raises(TypeError, match="a batch must be a tensor"):
        recalibrate(nn.BatchNorm1d(3), ["text"])
    with pytest.raises(ValueError, match="momentum must be in"):
        recalibrate(nn.BatchNorm1d(3, momentum=None), [torch.randn(2, 3)], strategy="ema")


def test_nonfinite_batches_are_left_out():
    bn = nn.BatchNorm1d(2)
    good = torch.randn(8, 2)
    bad = torch.full((4, 2), float("nan"))
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        _, report = recalibrate(bn, [good, bad], return_report=True)
    assert report.skipped_batches == 1
    assert_close(bn.running_var, good.var(0))


def test_progress_plain_text(capsys):
    recalibrate(nn.BatchNorm1d(2), [torch.randn(4, 2)] * 3, progress=True)
    assert "recalibrating BatchNorm: 3/3" in capsys.readouterr().err
