"""BatchNormAct1d/2d vs torch BatchNorm followed by the activation, vs the NumPy reference,
and timm's BatchNormAct2d state dict layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normkit as nk
from normkit import reference_variants as rv
from normkit.functional.batch_norm_act import batch_norm_act
from tests.conftest import assert_close

ACTS = {
    "relu": lambda t, s: torch.relu(t),
    "leaky_relu": lambda t, s: nn.functional.leaky_relu(t, s),
    "silu": lambda t, s: nn.functional.silu(t),
    "gelu": lambda t, s: nn.functional.gelu(t),
    "identity": lambda t, s: t,
}
SHAPES = [
    ("BatchNormAct1d", "BatchNorm1d", (6, 4), "contiguous"),
    ("BatchNormAct1d", "BatchNorm1d", (3, 4, 5), "contiguous"),
    ("BatchNormAct2d", "BatchNorm2d", (2, 4, 3, 5), "contiguous"),
    ("BatchNormAct2d", "BatchNorm2d", (3, 4, 2, 3), "channels_last"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize(("cls", "bn_cls", "shape", "layout"), SHAPES, ids=str)
def test_matches_torch_batch_norm_then_activation(cls, bn_cls, shape, layout, act, dtype):
    slope = 0.2
    bn = getattr(nn, bn_cls)(4, momentum=0.3).to(dtype)
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.5)
        bn.bias.normal_()
    ours = getattr(nk.nn, cls)(4, act=act, momentum=0.3, negative_slope=slope).to(dtype)
    ours.load_state_dict(bn.state_dict())
    for step in range(3):
        if step == 2:
            bn.eval()
            ours.eval()
        x = torch.randn(shape, dtype=dtype) + 0.3 * step
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        g = torch.randn(shape, dtype=dtype)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), ACTS[act](bn(xb), slope)
        ya.backward(g)
        yb.backward(g)
        what = f"{act} step {step}"
        assert_close(ya, yb, dtype, what=f"{what} y")
        assert ya.stride() == x.stride(), "layout"
        assert_close(xa.grad, xb.grad, dtype, what=f"{what} dx", floor=1.0)
        assert_close(ours.weight.grad, bn.weight.grad, dtype, what=f"{what} dw", floor=1.0)
        assert_close(ours.bias.grad, bn.bias.grad, dtype, what=f"{what} db", floor=1.0)
        for (k, a), (_, b) in zip(ours.state_dict().items(), bn.state_dict().items(), strict=True):
            assert_close(a, b, dtype, what=f"{what} {k}")
        ours.zero_grad()
        bn.zero_grad()


@pytest.mark.parametrize("act", list(ACTS))
def test_matches_numpy_reference(act):
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    g = torch.randn_like(x)
    y = batch_norm_act(x, None, None, w, b, True, act=act, negative_slope=0.1)
    y.backward(g)
    args = (w.numpy(), b.numpy(), 1e-5, act, 0.1)
    y_ref, _, _ = rv.batch_norm_act_train(x.detach().numpy(), *args)
    dx_ref, _, _ = rv.batch_norm_act_train_backward(g.numpy(), x.detach().numpy(), *args)
    assert_close(y, torch.from_numpy(y_ref))
    assert_close(x.grad, torch.from_numpy(dx_ref), floor=1.0)


@pytest.mark.parametrize("act", ["leaky_relu", "silu", "gelu"])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_and_gradgradcheck(act, training):
    x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    rm, rvar = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5

    def fn(x, w, b):
        return batch_norm_act(x, rm.clone(), rvar.clone(), w, b, training, act=act)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


class TimmLayoutBatchNormAct2d(nn.BatchNorm2d):
    """The structure of timm's ``timm.layers.norm_act.BatchNormAct2d`` (a BatchNorm2d
    subclass with parameterless ``drop`` and ``act`` submodules), rebuilt here because timm
    is not a dependency: its state dict is BatchNorm2d's keys."""

    def __init__(self, num_features, act_layer=nn.ReLU):
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = act_layer()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


@pytest.mark.parametrize(("act", "act_layer"), [("relu", nn.ReLU), ("silu", nn.SiLU)])
def test_timm_checkpoints_load_both_ways(act, act_layer):
    timm_layer = TimmLayoutBatchNormAct2d(6, act_layer)
    with torch.no_grad():
        timm_layer.weight.normal_()
        timm_layer.bias.normal_()
        timm_layer.running_mean.normal_()
        timm_layer.running_var.uniform_(0.5, 2)
    ours = nk.nn.BatchNormAct2d(6, act=act)
    assert list(ours.state_dict()) == list(timm_layer.state_dict())
    ours.load_state_dict(timm_layer.state_dict())  # strict
    x = torch.randn(4, 6, 3, 3)
    assert_close(ours(x), timm_layer(x))
    ours.eval()
    timm_layer.eval()
    assert_close(ours(x), timm_layer(x))
    back = TimmLayoutBatchNormAct2d(6, act_layer)
    back.load_state_dict(ours.state_dict())  # strict
    # A model whose norm layer is a timm BatchNormAct2d loads into the normkit version.
    model_timm = nn.Sequential(nn.Conv2d(3, 6, 3), TimmLayoutBatchNormAct2d(6, act_layer))
    model_ours = nn.Sequential(nn.Conv2d(3, 6, 3), nk.nn.BatchNormAct2d(6, act=act))
    model_ours.load_state_dict(model_timm.state_dict())


def test_track_running_stats_false_uses_batch_stats_in_eval():
    ours = nk.nn.BatchNormAct1d(3, act="relu", track_running_stats=False).eval()
    bn = nn.BatchNorm1d(3, track_running_stats=False).eval()
    x = torch.randn(6, 3)
    assert_close(ours(x), torch.relu(bn(x)))
    assert ours.running_mean is None


def test_repr_and_state():
    layer = nk.nn.BatchNormAct2d(8, act="leaky_relu", negative_slope=0.2)
    assert "act='leaky_relu', negative_slope=0.2" in repr(layer)
    assert "act='gelu'" in repr(nk.nn.BatchNormAct1d(8, act="gelu"))
    assert list(layer.state_dict()) == list(nn.BatchNorm2d(8).state_dict())


def test_bad_input():
    with pytest.raises(ValueError, match=r"act must be one of \['identity', 'relu'.*got 'tanh'"):
        nk.nn.BatchNormAct2d(3, act="tanh")
    with pytest.raises(ValueError, match="negative_slope must be a finite number"):
        nk.nn.BatchNormAct2d(3, act="leaky_relu", negative_slope=float("nan"))
    with pytest.raises(ValueError, match=r"BatchNormAct2d\(3\): expected 4D input \(got 2D"):
        nk.nn.BatchNormAct2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nk.nn.BatchNormAct1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="act must be one of"):
        batch_norm_act(torch.randn(4, 3), None, None, training=True, act="Relu")
