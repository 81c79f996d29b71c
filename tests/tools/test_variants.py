"""The tools on normkit's BatchNorm variants (frozen, renorm, ghost, sync, fused activation)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import ConversionError, convert, fold, recalibrate
from normkit.tools.convert import ORIGIN_ATTR
from tests.conftest import assert_close
from tests.tools.models import ResNetish, mlp, randomize_norm_state


def _eval_out(model, x):
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        return m(x)


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("ns", [nn, nk.nn], ids=["torch", "normkit"])
@pytest.mark.parametrize(
    "target, classes, options",
    [
        ("frozen", ("FrozenBatchNorm1d", "FrozenBatchNorm2d"), {}),
        ("renorm", ("BatchRenorm1d", "BatchRenorm2d"), {"rmax": 2.0, "dmax": 1.0}),
        ("ghost", ("GhostBatchNorm1d", "GhostBatchNorm2d"), {"virtual_batch_size": 4}),
        ("sync", ("SyncBatchNorm",), {}),
    ],
)
@pytest.mark.parametrize("case", ["resnet", "mlp"])
def test_variant_targets_keep_eval_outputs_and_invert_exactly(ns, target, classes, options, case):
    model, x = (
        (randomize_norm_state(ResNetish(ns)), torch.randn(8, 3, 8, 8))
        if case == "resnet"
        else (randomize_norm_state(mlp(ns)), torch.randn(16, 20))
    )
    converted, report = convert(model, target, return_report=True, **options)
    layers = [m for _, m in nk.tools.iter_norm_layers(converted)]
    assert len(report) == len(layers) and all(type(m).__name__ in classes for m in layers)
    assert_close(_eval_out(converted, x), _eval_out(model, x))
    back = convert(converted, "original")
    for (name, a), (_, b) in zip(
        nk.tools.iter_norm_layers(back), nk.tools.iter_norm_layers(model), strict=True
    ):
        assert type(a) is type(b) and repr(a) == repr(b), name
        assert not hasattr(a, ORIGIN_ATTR)
    _assert_same_state(back, model)
    plain = convert(converted, "batchnorm")
    for (_, a), (_, b) in zip(
        nk.tools.iter_norm_layers(plain), nk.tools.iter_norm_layers(model), strict=True
    ):
        assert type(a) is getattr(nk.nn, type(b).__name__)  # rank taken from the original
    assert_close(_eval_out(plain, x), _eval_out(model, x))


def test_sync_on_one_process_equals_batchnorm_in_training():
    model = randomize_norm_state(ResNetish(nk.nn))
    synced = convert(model, "sync")
    x = torch.randn(4, 3, 8, 8)
    a, b = copy.deepcopy(model).train(), copy.deepcopy(synced).train()
    assert_close(b(x), a(x))
    for (_, la), (_, lb) in zip(
        nk.tools.iter_norm_layers(a), nk.tools.iter_norm_layers(b), strict=True
    ):
        assert_close(lb.running_var, la.running_var)
    bare = nk.nn.SyncBatchNorm(4)  # no conversion history: the rank must be given
    with pytest.raises(ConversionError, match="pass dim=1, 2 or 3"):
        convert(bare, "batchnorm")
    assert type(convert(bare, "batchnorm", dim=3)) is nk.nn.BatchNorm3d


def test_frozen_details():
    bn = randomize_norm_state(nn.Sequential(nn.BatchNorm2d(4, affine=False)))[0]
    frozen = convert(bn, "frozen")
    assert torch.equal(frozen.weight, torch.ones(4)) and torch.equal(frozen.bias, torch.zeros(4))
    x = torch.randn(2, 4, 3, 3)
    assert_close(frozen.train()(x), bn.eval()(x))  # frozen: eval behaviour even in train mode
    with pytest.raises(ConversionError, match=r"track_running_stats=False.*FrozenBatchNorm"):
        convert(nn.BatchNorm2d(4, track_running_stats=False), "frozen")
    with pytest.raises(ConversionError, match=r"no torch\.nn twin"):
        convert(frozen, "torch")
    assert nk.tools.norm_kind(frozen) == "frozen"


def test_ghost_has_no_3d():
    with pytest.raises(ConversionError, match="not BatchNorm3d"):
        convert(nn.BatchNorm3d(2), "ghost")


def test_fold_frozen_batchnorm():
    model = randomize_norm_state(ResNetish(nn)).eval()
    frozen = convert(model, "frozen")
    folded, report = fold(frozen, return_report=True)
    assert len(report) == 6
    x = torch.randn(2, 3, 8, 8)
    assert_close(_eval_out(folded, x), _eval_out(model, x))


@pytest.mark.parametrize(
    ("act", "kept"),
    [("relu", nn.ReLU), ("identity", nn.Identity), ("silu", nn.SiLU), ("relu6", nn.ReLU6)],
)
def test_fold_batchnorm_act_keeps_the_activation(act, kept):
    conv = nn.Conv2d(3, 4, 1)
    model = nn.Sequential(copy.deepcopy(conv), nk.nn.BatchNormAct2d(4, act=act)).eval()
    randomize_norm_state(model)
    folded, report = fold(model, return_report=True)
    assert report.folded == [("0", "1")] and type(folded[1]) is kept
    x = torch.randn(2, 3, 5, 5)
    assert_close(_eval_out(folded, x), _eval_out(model, x))


def test_batchnorm_act_does_not_convert_to_plain_batchnorm():
    relu = nn.Sequential(nn.Conv2d(3, 4, 1), nk.nn.BatchNormAct2d(4, act="relu"))
    with pytest.raises(ConversionError, match="fuses an activation"):
        convert(relu, "batchnorm")


@pytest.mark.parametrize("target", ["renorm", "ghost", "sync"])
def test_recalibrate_and_freeze_variants(target):
    model = convert(ResNetish(nn), target)
    batches = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    _, report = recalibrate(model, batches, return_report=True)
    assert len(report.layers) == 6
    stem = model.stem[1]
    with torch.no_grad():
        expected = model.stem[0](torch.cat(batches))
    assert_close(stem.running_mean, expected.mean((0, 2, 3)))
    nk.tools.freeze(model)
    model.train()
    assert not stem.training and not stem.weight.requires_grad
    nk.tools.unfreeze(model)
    assert stem.training


def test_torch_sync_batchnorm_round_trip():
    model = randomize_norm_state(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4, momentum=0.2))
    )
    ours = convert(model, "normkit")
    assert type(ours[1]) is nk.nn.SyncBatchNorm and ours[1].momentum == 0.2
    back = convert(ours, "torch")
    assert type(back[1]) is nn.SyncBatchNorm
    _assert_same_state(back, model)
    x = torch.randn(2, 3, 4, 4)
    assert_close(_eval_out(ours, x), _eval_out(model, x))
