"""FrozenBatchNorm1d/2d/3d: BatchNorm inference in both modes, torchvision's layout,
loading BatchNorm checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import reference_variants as rv
from tests.conftest import assert_close

CASES = [
    ("FrozenBatchNorm1d", "BatchNorm1d", (5, 4)),
    ("FrozenBatchNorm1d", "BatchNorm1d", (3, 4, 6)),
    ("FrozenBatchNorm2d", "BatchNorm2d", (2, 4, 5, 3)),
    ("FrozenBatchNorm3d", "BatchNorm3d", (2, 4, 2, 3, 2)),
]


def _trained_bn(cls, dtype=torch.float32):
    bn = getattr(nn, cls)(4).to(dtype)
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(7)
    return bn.eval()


LAYOUT_CASES = [
    (*case, layout)
    for case in CASES
    for layout in ("contiguous", "channels_last")
    if layout == "contiguous" or len(case[2]) in (4, 5)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("cls", "bn_cls", "shape", "layout"), LAYOUT_CASES, ids=str)
def test_equals_batch_norm_inference_in_both_modes(cls, bn_cls, shape, layout, dtype):
    bn = _trained_bn(bn_cls, dtype)
    frozen = getattr(nk.nn, cls)(4).to(dtype)
    frozen.load_state_dict(bn.state_dict())  # a BatchNorm checkpoint, num_batches_tracked too
    x = torch.randn(shape, dtype=dtype) * 2 + 1
    if layout == "channels_last":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    g = torch.randn(shape, dtype=dtype)
    x_ref = x.clone().requires_grad_(True)
    y_ref = bn(x_ref)
    y_ref.backward(g)
    for mode in ("train", "eval"):
        getattr(frozen, mode)()
        xi = x.clone().requires_grad_(True)
        y = frozen(xi)
        y.backward(g)
        assert_close(y, y_ref, dtype, what=f"{mode} y")
        assert_close(xi.grad, x_ref.grad, dtype, what=f"{mode} dx")
        assert y.stride() == x.stride()
    y_np = rv.frozen_batch_norm(
        x.double().numpy(), *(bn.state_dict()[k].double().numpy() for k in
                              ("weight", "bias", "running_mean", "running_var")),
    )  # fmt: skip
    assert_close(y, torch.from_numpy(y_np), dtype)
    assert list(frozen.parameters()) == []
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]


def test_torchvision_layout_and_repr():
    """torchvision.ops.FrozenBatchNorm2d: buffers weight, bias, running_mean, running_var
    (ones, zeros, zeros, ones), repr ``FrozenBatchNorm2d(64, eps=1e-05)``."""
    frozen = nk.nn.FrozenBatchNorm2d(64)
    assert repr(frozen) == "FrozenBatchNorm2d(64, eps=1e-05)"
    state = frozen.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == [
        ("weight", (64,)), ("bias", (64,)), ("running_mean", (64,)), ("running_var", (64,)),
    ]  # fmt: skip
    assert torch.equal(state["weight"], torch.ones(64))
    assert torch.equal(state["running_var"], torch.ones(64))
    assert not state["bias"].any() and not state["running_mean"].any()
    # A checkpoint in that layout loads strictly into a fresh layer.
    other = nk.nn.FrozenBatchNorm2d(64)
    other.load_state_dict({k: torch.randn(64).abs() for k in state})


def test_state_dict_round_trip_and_pickle():
    import copy
    import io
    import pickle

    frozen = nk.nn.FrozenBatchNorm2d.from_batch_norm(_trained_bn("BatchNorm2d"))
    buffer = io.BytesIO()
    torch.save(frozen.state_dict(), buffer)
    buffer.seek(0)
    fresh = nk.nn.FrozenBatchNorm2d(4)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 4, 3, 3)
    for clone in (fresh, copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen))):
        assert torch.equal(clone(x), frozen(x))


def test_from_batch_norm():
    bn = _trained_bn("BatchNorm2d")
    frozen = nk.nn.FrozenBatchNorm2d.from_batch_norm(bn)
    x = torch.randn(3, 4, 2, 2)
    assert_close(frozen(x), bn(x))
    no_affine = nn.BatchNorm2d(4, affine=False).eval()
    with torch.no_grad():
        no_affine.running_var.fill_(3.0)
    assert_close(nk.nn.FrozenBatchNorm2d.from_batch_norm(no_affine)(x), no_affine(x))
    ours = nk.nn.BatchNorm2d(4).eval()
    ours.load_state_dict(bn.state_dict())
    assert_close(nk.nn.FrozenBatchNorm2d.from_batch_norm(ours)(x), bn(x))
    with pytest.raises(ValueError, match="expected a module with running_mean and running_var"):
        nk.nn.FrozenBatchNorm2d.from_batch_norm(nn.BatchNorm2d(4, track_running_stats=False))


def test_nothing_changes_in_training_mode():
    frozen = nk.nn.FrozenBatchNorm1d.from_batch_norm(_trained_bn("BatchNorm1d")).train()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen(torch.randn(8, 4) * 10)
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k
    np.testing.assert_array_equal(frozen(torch.zeros(1, 4)).shape, (1, 4))  # N=1 is fine


def test_bad_input():
    frozen = nk.nn.FrozenBatchNorm2d(4)
    with pytest.raises(ValueError, match=r"FrozenBatchNorm2d\(4\): expected 4D input \(got 2D"):
        frozen(torch.randn(2, 4))
    with pytest.raises(ValueError, match="expected 4 channels"):
        frozen(torch.randn(2, 3, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        frozen(torch.ones(2, 4, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        nk.nn.FrozenBatchNorm2d(0)
    with pytest.raises(ValueError, match="eps must be non-negative"):
        nk.nn.FrozenBatchNorm2d(3, eps=-1.0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        frozen.load_state_dict(nk.nn.FrozenBatchNorm2d(5).state_dict())
