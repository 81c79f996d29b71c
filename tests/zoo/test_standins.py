"""The timm / torchvision stand-ins against the originals' contract: import paths, base
classes, defaults, state_dict keys, and forward == a formula written here (float64), plus
the install() / uninstall() round trip."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import assert_close
from tests.zoo import ecosystem
from tests.zoo.ecosystem import (
    timm_create_act,
    timm_layers,
    timm_norm,
    timm_norm_act,
    timm_response_norm,
    torchvision_ops,
)
from tests.zoo.ecosystem.timm_layers import DropPath, SqueezeExcite, StdConv2d
from tests.zoo.ecosystem.timm_norm import (
    GroupNorm,
    GroupNorm1,
    LayerNorm,
    LayerNorm2d,
    RmsNorm,
    RmsNorm2d,
)
from tests.zoo.ecosystem.timm_norm_act import (
    BatchNormAct2d,
    FrozenBatchNormAct2d,
    GroupNorm1Act,
    GroupNormAct,
    LayerNormAct,
    LayerNormAct2d,
    freeze_batch_norm_2d,
)
from tests.zoo.ecosystem.timm_response_norm import (
    EvoNorm2dB0,
    EvoNorm2dS0,
    EvoNorm2dS0a,
    FilterResponseNormAct2d,
    FilterResponseNormTlu2d,
    GlobalResponseNorm,
)
from tests.zoo.ecosystem.torchvision_ops import (
    Conv2dNormActivation,
    FrozenBatchNorm2d,
    Permute,
    SqueezeExcitation,
    StochasticDepth,
)
from tests.zoo.ecosystem.torchvision_ops import LayerNorm2d as TvLayerNorm2d
from tests.zoo.norm_state import randomize_norm_state

F64 = torch.float64

# --- where each class says it lives, and what it derives from ------------------------

REAL_PATHS = {
    BatchNormAct2d: "timm.layers.norm_act.BatchNormAct2d",
    FrozenBatchNormAct2d: "timm.layers.norm_act.FrozenBatchNormAct2d",
    GroupNormAct: "timm.layers.norm_act.GroupNormAct",
    GroupNorm1Act: "timm.layers.norm_act.GroupNorm1Act",
    LayerNormAct: "timm.layers.norm_act.LayerNormAct",
    LayerNormAct2d: "timm.layers.norm_act.LayerNormAct2d",
    GroupNorm: "timm.layers.norm.GroupNorm",
    GroupNorm1: "timm.layers.norm.GroupNorm1",
    LayerNorm: "timm.layers.norm.LayerNorm",
    LayerNorm2d: "timm.layers.norm.LayerNorm2d",
    RmsNorm: "timm.layers.norm.RmsNorm",
    RmsNorm2d: "timm.layers.norm.RmsNorm2d",
    EvoNorm2dB0: "timm.layers.evo_norm.EvoNorm2dB0",
    EvoNorm2dS0: "timm.layers.evo_norm.EvoNorm2dS0",
    EvoNorm2dS0a: "timm.layers.evo_norm.EvoNorm2dS0a",
    FilterResponseNormTlu2d: "timm.layers.filter_response_norm.FilterResponseNormTlu2d",
    FilterResponseNormAct2d: "timm.layers.filter_response_norm.FilterResponseNormAct2d",
    GlobalResponseNorm: "timm.layers.grn.GlobalResponseNorm",
    StdConv2d: "timm.layers.std_conv.StdConv2d",
    DropPath: "timm.layers.drop.DropPath",
    SqueezeExcite: "timm.models._efficientnet_blocks.SqueezeExcite",
    FrozenBatchNorm2d: "torchvision.ops.misc.FrozenBatchNorm2d",
    Conv2dNormActivation: "torchvision.ops.misc.Conv2dNormActivation",
    SqueezeExcitation: "torchvision.ops.misc.SqueezeExcitation",
    Permute: "torchvision.ops.misc.Permute",
    StochasticDepth: "torchvision.ops.stochastic_depth.StochasticDepth",
    TvLayerNorm2d: "torchvision.models.convnext.LayerNorm2d",
}

#: (class, direct base) as in the originals.
BASES = [
    (BatchNormAct2d, nn.BatchNorm2d),
    (GroupNormAct, nn.GroupNorm),
    (GroupNorm1Act, nn.GroupNorm),
    (LayerNormAct, nn.LayerNorm),
    (LayerNormAct2d, nn.LayerNorm),
    (GroupNorm, nn.GroupNorm),
    (GroupNorm1, nn.GroupNorm),
    (LayerNorm, nn.LayerNorm),
    (LayerNorm2d, nn.LayerNorm),
    (TvLayerNorm2d, nn.LayerNorm),
    (RmsNorm, nn.Module),
    (RmsNorm2d, nn.Module),
    (FrozenBatchNormAct2d, nn.Module),
    (FrozenBatchNorm2d, nn.Module),
    (EvoNorm2dB0, nn.Module),
    (EvoNorm2dS0, nn.Module),
    (EvoNorm2dS0a, EvoNorm2dS0),
    (FilterResponseNormTlu2d, nn.Module),
    (FilterResponseNormAct2d, nn.Module),
    (GlobalResponseNorm, nn.Module),
    (StdConv2d, nn.Conv2d),
    (Conv2dNormActivation, torchvision_ops.ConvNormActivation),
    (torchvision_ops.ConvNormActivation, nn.Sequential),
]


@pytest.mark.parametrize("cls", list(REAL_PATHS), ids=lambda c: c.__name__)
def test_reports_the_real_import_path(cls):
    assert f"{cls.__module__}.{cls.__qualname__}" == REAL_PATHS[cls]


@pytest.mark.parametrize(("cls", "base"), BASES, ids=lambda c: c.__name__)
def test_direct_base_class_is_the_originals(cls, base):
    assert cls.__bases__ == (base,)


# --- defaults ------------------------------------------------------------------------

DEFAULT_EPS = [
    (lambda: BatchNormAct2d(4), 1e-5),
    (lambda: FrozenBatchNormAct2d(4), 1e-5),
    (lambda: GroupNormAct(64), 1e-5),
    (lambda: GroupNorm1Act(4), 1e-5),
    (lambda: LayerNormAct(4), 1e-5),
    (lambda: LayerNormAct2d(4), 1e-5),
    (lambda: GroupNorm(64), 1e-5),
    (lambda: GroupNorm1(4), 1e-5),
    (lambda: LayerNorm(4), 1e-6),
    (lambda: LayerNorm2d(4), 1e-6),
    (lambda: RmsNorm(4), 1e-6),
    (lambda: RmsNorm2d(4), 1e-6),
    (lambda: EvoNorm2dB0(4), 1e-3),
    (lambda: EvoNorm2dS0(64), 1e-5),
    (lambda: EvoNorm2dS0a(64), 1e-3),
    (lambda: FilterResponseNormTlu2d(4), 1e-5),
    (lambda: FilterResponseNormAct2d(4), 1e-5),
    (lambda: GlobalResponseNorm(4), 1e-6),
    (lambda: StdConv2d(3, 4, 3), 1e-6),
    (lambda: FrozenBatchNorm2d(4), 1e-5),
    (lambda: TvLayerNorm2d(4), 1e-5),
]


@pytest.mark.parametrize(("make", "eps"), DEFAULT_EPS, ids=range(len(DEFAULT_EPS)))
def test_default_eps(make, eps):
    layer = make()
    assert layer.eps == eps, type(layer).__name__


def test_other_defaults():
    assert GroupNormAct(64).num_groups == 32 and GroupNorm(64).num_groups == 32
    assert GroupNormAct(64, group_size=8).num_groups == 8
    assert GroupNorm1(6).num_groups == 1 and GroupNorm1Act(6).num_groups == 1
    assert EvoNorm2dS0(64).groups == 32 and EvoNorm2dS0(64, group_size=16).groups == 4
    assert EvoNorm2dB0(4).momentum == 0.1
    assert RmsNorm(4).normalized_shape == (4,) and RmsNorm(4).elementwise_affine
    assert LayerNorm(4, affine=False).weight is None
    grn = GlobalResponseNorm(4)
    assert grn.spatial_dim == (1, 2) and grn.channel_dim == -1
    assert torch.equal(grn.weight, torch.zeros(4)) and torch.equal(grn.bias, torch.zeros(4))
    assert torch.equal(FilterResponseNormTlu2d(4).tau, torch.zeros(4))
    assert FilterResponseNormTlu2d(4, apply_act=False).tau is None
    assert EvoNorm2dB0(4, apply_act=False).v is None and EvoNorm2dS0(64, apply_act=False).v is None
    assert StdConv2d(3, 4, 7, stride=2).padding == (3, 3) and StdConv2d(3, 4, 3).bias is None
    assert DropPath().drop_prob == 0.0 and DropPath().scale_by_keep


NORM_ACT = [
    lambda **kw: BatchNormAct2d(8, **kw),
    lambda **kw: FrozenBatchNormAct2d(8, **kw),
    lambda **kw: GroupNormAct(8, num_groups=2, **kw),
    lambda **kw: GroupNorm1Act(8, **kw),
    lambda **kw: LayerNormAct(8, **kw),
    lambda **kw: LayerNormAct2d(8, **kw),
]


@pytest.mark.parametrize("make", NORM_ACT, ids=range(len(NORM_ACT)))
def test_norm_act_builds_its_activation_like_timm(make):
    default = make()
    assert type(default.act) is nn.ReLU and default.act.inplace
    assert type(default.drop) is nn.Identity
    assert type(make(apply_act=False).act) is nn.Identity
    assert not make(inplace=False).act.inplace
    silu = make(act_layer="silu")
    assert type(silu.act) is nn.SiLU and silu.act.inplace
    assert type(make(act_layer=nn.GELU).act) is nn.GELU  # no inplace argument: dropped
    leaky = make(act_layer=nn.LeakyReLU, act_kwargs={"negative_slope": 0.25})
    assert leaky.act.negative_slope == 0.25 and leaky.act.inplace
    assert type(make(drop_layer=nn.Dropout).drop) is nn.Dropout


def test_create_act_layer():
    assert timm_create_act.create_act_layer(None) is None
    assert type(timm_create_act.create_act_layer("hard_sigmoid")) is nn.Hardsigmoid
    assert not timm_create_act.create_act_layer("hard_sigmoid").inplace
    assert timm_create_act.create_act_layer(nn.ReLU, inplace=True).inplace
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        timm_create_act.create_act_layer("nope")


# --- state_dict keys -------------------------------------------------------------------

STATE_KEYS = [
    (
        lambda: BatchNormAct2d(4),
        ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
    ),
    (lambda: FrozenBatchNormAct2d(4), ["weight", "bias", "running_mean", "running_var"]),
    (lambda: FrozenBatchNorm2d(4), ["weight", "bias", "running_mean", "running_var"]),
    (lambda: GroupNormAct(4, num_groups=2), ["weight", "bias"]),
    (lambda: LayerNormAct2d(4), ["weight", "bias"]),
    (lambda: LayerNorm2d(4), ["weight", "bias"]),
    (lambda: RmsNorm(4), ["weight"]),
    (lambda: RmsNorm2d(4, affine=False), []),
    (lambda: EvoNorm2dB0(4), ["weight", "bias", "v", "running_var"]),
    (lambda: EvoNorm2dB0(4, apply_act=False), ["weight", "bias", "running_var"]),
    (lambda: EvoNorm2dS0(8, groups=2), ["weight", "bias", "v"]),
    (lambda: EvoNorm2dS0a(8, groups=2), ["weight", "bias", "v"]),
    (lambda: FilterResponseNormTlu2d(4), ["weight", "bias", "tau"]),
    (lambda: FilterResponseNormTlu2d(4, apply_act=False), ["weight", "bias"]),
    (lambda: FilterResponseNormAct2d(4), ["weight", "bias"]),
    (lambda: GlobalResponseNorm(4), ["weight", "bias"]),
    (lambda: StdConv2d(3, 4, 3), ["weight"]),
    (
        lambda: SqueezeExcite(8),
        ["conv_reduce.weight", "conv_reduce.bias", "conv_expand.weight", "conv_expand.bias"],
    ),
    (lambda: SqueezeExcitation(8, 2), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]),
    (
        lambda: Conv2dNormActivation(3, 4),
        [
            "0.weight",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
        ],
    ),
]


@pytest.mark.parametrize(("make", "keys"), STATE_KEYS, ids=range(len(STATE_KEYS)))
def test_state_dict_keys(make, keys):
    assert list(make().state_dict()) == keys


def test_frozen_layers_load_a_batchnorm_checkpoint():
    bn = randomize_norm_state(nn.BatchNorm2d(4))
    for frozen in (FrozenBatchNorm2d(4), FrozenBatchNormAct2d(4)):
        frozen.load_state_dict(bn.state_dict())  # strict: num_batches_tracked dropped
        assert torch.equal(frozen.running_var, bn.running_var)
        assert "num_batches_tracked" not in frozen.state_dict()
    act = BatchNormAct2d(4)
    act.load_state_dict(bn.state_dict())  # and BatchNormAct2d loads a BatchNorm2d's as is
    assert list(act.state_dict()) == list(bn.state_dict())


# --- forward against formulas, float64 ------------------------------------------------


def _x(*shape, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * 1.5 + 0.3).requires_grad_()


def _rand(module):
    return randomize_norm_state(module).to(F64)


def _per_channel(t, ndim=4):
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _standardize(x, dims, eps):
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _layer_norm_channels(x, w, b, eps):
    """LayerNorm over dim 1 of NCHW."""
    return _standardize(x, (1,), eps) * _per_channel(w) + _per_channel(b)


def _group_norm(x, groups, w, b, eps):
    y = _standardize(x.reshape(x.shape[0], groups, -1), (2,), eps).reshape(x.shape)
    return y * _per_channel(w, x.ndim) + _per_channel(b, x.ndim)


def test_layer_norms():
    x4 = _x(2, 6, 3, 5)
    for cls in (LayerNorm2d, TvLayerNorm2d):
        m = _rand(cls(6))
        assert_close(m(x4), _layer_norm_channels(x4, m.weight, m.bias, m.eps), what=cls.__module__)
    tokens = _x(2, 7, 6)
    m = _rand(LayerNorm(6))
    expected = _standardize(tokens, (-1,), 1e-6) * m.weight + m.bias
    assert_close(m(tokens), expected, what="timm LayerNorm")
    m = _rand(LayerNormAct(6))
    assert_close(m(tokens), torch.relu(_standardize(tokens, (-1,), 1e-5) * m.weight + m.bias))
    m = _rand(LayerNormAct2d(6, act_layer=nn.GELU))
    assert_close(m(x4), F.gelu(_layer_norm_channels(x4, m.weight, m.bias, 1e-5)))


def test_group_norms():
    x = _x(2, 8, 3, 4)
    m = _rand(GroupNorm(8, num_groups=4))
    assert_close(m(x), _group_norm(x, 4, m.weight, m.bias, 1e-5), what="GroupNorm")
    m = _rand(GroupNorm1(8))
    assert_close(m(x), _group_norm(x, 1, m.weight, m.bias, 1e-5), what="GroupNorm1")
    m = _rand(GroupNormAct(8, group_size=2))
    assert_close(m(x), torch.relu(_group_norm(x, 4, m.weight, m.bias, 1e-5)), what="GroupNormAct")
    m = _rand(GroupNorm1Act(8, act_layer="silu"))
    assert_close(m(x), F.silu(_group_norm(x, 1, m.weight, m.bias, 1e-5)), what="GroupNorm1Act")


def test_rms_norms():
    tokens = _x(3, 5, 6)
    m = _rand(RmsNorm(6))
    expected = tokens / torch.sqrt((tokens**2).mean(-1, keepdim=True) + 1e-6) * m.weight
    assert_close(m(tokens), expected, what="RmsNorm")
    x = _x(2, 6, 3, 4)
    m = _rand(RmsNorm2d(6))
    expected = x / torch.sqrt((x**2).mean(1, keepdim=True) + 1e-6) * _per_channel(m.weight)
    assert_close(m(x), expected, what="RmsNorm2d")


def test_batchnorm_act_is_batchnorm_then_activation():
    x = _x(4, 6, 3, 5)
    m = _rand(BatchNormAct2d(6, act_layer="hard_swish", momentum=0.2))
    torch_bn = nn.BatchNorm2d(6, momentum=0.2).to(F64)
    torch_bn.load_state_dict(m.state_dict())
    rm0, rv0 = m.running_mean.clone(), m.running_var.clone()
    y = m(x)
    assert_close(
        y,
        F.hardswish(
            _standardize(x, (0, 2, 3), 1e-5) * _per_channel(m.weight) + _per_channel(m.bias)
        ),
    )
    n = x.numel() / x.shape[1]
    batch_var = x.detach().var(dim=(0, 2, 3), unbiased=False) * n / (n - 1)
    assert_close(m.running_mean, 0.8 * rm0 + 0.2 * x.detach().mean(dim=(0, 2, 3)))
    assert_close(m.running_var, 0.8 * rv0 + 0.2 * batch_var)
    assert m.num_batches_tracked.item() == 8
    m.eval()
    expected = (x - _per_channel(m.running_mean)) / torch.sqrt(_per_channel(m.running_var) + 1e-5)
    expected = F.hardswish(expected * _per_channel(m.weight) + _per_channel(m.bias))
    assert_close(m(x), expected, what="eval")
    assert_close(y, F.hardswish(torch_bn(x)), what="torch.nn.BatchNorm2d + act")
    assert torch.equal(torch_bn.running_var, m.running_var)


def test_batchnorm_act_cumulative_average_and_untracked_like_torch():
    x1, x2 = _x(3, 4, 2, 3, seed=1), _x(3, 4, 2, 3, seed=2)
    for kwargs in ({"momentum": None}, {"track_running_stats": False}):
        ours = BatchNormAct2d(4, apply_act=False, **kwargs).to(F64)
        theirs = nn.BatchNorm2d(4, **kwargs).to(F64)
        for x in (x1, x2):
            assert_close(ours(x), theirs(x), what=str(kwargs))
        assert_close(ours.running_var, theirs.running_var, what=str(kwargs))
        ours.eval(), theirs.eval()
        assert_close(ours(x1), theirs(x1), what=f"eval {kwargs}")
    with pytest.raises(AssertionError, match="expected 4D input"):
        BatchNormAct2d(4)(torch.randn(2, 4, 3))


def _frozen_formula(m, x):
    y = (x - _per_channel(m.running_mean)) / torch.sqrt(_per_channel(m.running_var) + m.eps)
    return y * _per_channel(m.weight) + _per_channel(m.bias)


def test_frozen_batchnorms():
    x = _x(2, 5, 3, 4)
    m = _rand(FrozenBatchNorm2d(5))
    assert_close(m(x), _frozen_formula(m, x), what="torchvision FrozenBatchNorm2d")
    m = _rand(FrozenBatchNormAct2d(5, act_layer=nn.ReLU6))
    assert_close(m(x), F.relu6(_frozen_formula(m, x)), what="FrozenBatchNormAct2d")
    assert repr(FrozenBatchNorm2d(5)) == "FrozenBatchNorm2d(5, eps=1e-05)"


def test_freeze_batch_norm_2d_keeps_eval_outputs():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        BatchNormAct2d(4, act_layer="silu"),
        nn.Conv2d(4, 4, 1),
        nn.BatchNorm2d(4),
    )
    model = randomize_norm_state(model).to(F64).eval()
    x = _x(2, 3, 6, 6)
    expected = model(x)
    frozen = freeze_batch_norm_2d(model)
    assert type(frozen[1]) is FrozenBatchNormAct2d and type(frozen[3]) is FrozenBatchNorm2d
    assert type(frozen[1].act) is nn.SiLU
    assert_close(frozen(x), expected)


def _f32_then_back(t):
    return t.to(torch.float32)


def test_filter_response_norms_take_the_mean_of_squares_in_float32():
    x = _x(2, 6, 4, 5)
    m = _rand(FilterResponseNormTlu2d(6))
    nu2 = _f32_then_back(x**2).mean(dim=(2, 3), keepdim=True)
    inv_rms = torch.rsqrt(nu2 + 1e-5).to(F64)
    affine = x * inv_rms * _per_channel(m.weight) + _per_channel(m.bias)
    expected = torch.maximum(affine, _per_channel(m.tau))
    y = m(x)
    assert_close(y, expected, what="FRN TLU")
    inv_rms64 = torch.rsqrt((x**2).mean(dim=(2, 3), keepdim=True) + 1e-5)
    all64 = torch.maximum(
        x * inv_rms64 * _per_channel(m.weight) + _per_channel(m.bias), _per_channel(m.tau)
    )
    deviation = ((y - all64).abs().max() / all64.abs().max()).item()
    assert 1e-12 < deviation < 1e-6, deviation  # the float32 statistic is visible in float64
    m = _rand(FilterResponseNormAct2d(6, act_layer="silu"))
    assert_close(m(x), F.silu(x * inv_rms * _per_channel(m.weight) + _per_channel(m.bias)))
    assert not FilterResponseNormAct2d(6).act.inplace


def _instance_std32(x, eps):
    return torch.sqrt(_f32_then_back(x).var(dim=(2, 3), unbiased=False, keepdim=True) + eps).to(F64)


def _group_std32(x, groups, eps):
    N, C, H, W = x.shape
    g = _f32_then_back(x).reshape(N, groups, -1)
    std = torch.sqrt(g.var(dim=2, unbiased=False, keepdim=True) + eps).to(F64)
    return std.expand(N, groups, C // groups * H * W).reshape(x.shape)


def test_evonorm_b0_training_and_evaluation():
    x = _x(4, 6, 3, 5)
    m = _rand(EvoNorm2dB0(6, momentum=0.3))
    rv0 = m.running_var.clone()
    y = m(x)
    batch_var = _f32_then_back(x).var(dim=(0, 2, 3), unbiased=False)
    left = _per_channel(torch.sqrt(batch_var + 1e-3).to(F64))
    right = x * _per_channel(m.v) + _instance_std32(x, 1e-3)
    expected = x / torch.maximum(left, right) * _per_channel(m.weight) + _per_channel(m.bias)
    assert_close(y, expected, what="train")
    n = x.numel() / 6
    increment = (batch_var.detach() * 0.3 * (n / (n - 1))).to(F64)  # rounded in float32 too
    assert_close(
        m.running_var,
        0.7 * rv0 + increment,
        what="running_var",
    )
    y.sum().backward()
    m.eval()
    left = _per_channel(torch.sqrt(m.running_var + 1e-3))
    expected = x / torch.maximum(left, right) * _per_channel(m.weight) + _per_channel(m.bias)
    assert_close(m(x), expected, what="eval")
    plain = _rand(EvoNorm2dB0(6, apply_act=False))
    assert_close(plain(x), x * _per_channel(plain.weight) + _per_channel(plain.bias), what="no act")


def test_evonorm_s0_and_s0a():
    x = _x(2, 8, 3, 4)
    m = _rand(EvoNorm2dS0(8, group_size=2))
    gate = x * torch.sigmoid(x * _per_channel(m.v))
    expected = gate / _group_std32(x, 4, 1e-5) * _per_channel(m.weight) + _per_channel(m.bias)
    assert_close(m(x), expected, what="S0")
    m = _rand(EvoNorm2dS0a(8, groups=2))
    gate = x * torch.sigmoid(x * _per_channel(m.v))
    expected = gate / _group_std32(x, 2, 1e-3) * _per_channel(m.weight) + _per_channel(m.bias)
    assert_close(m(x), expected, what="S0a")
    m = _rand(EvoNorm2dS0a(8, groups=2, apply_act=False))
    expected = x / _group_std32(x, 2, 1e-3) * _per_channel(m.weight) + _per_channel(m.bias)
    assert_close(m(x), expected, what="S0a without act still divides")
    m = _rand(EvoNorm2dS0(8, groups=2, apply_act=False))
    assert_close(m(x), x * _per_channel(m.weight) + _per_channel(m.bias), what="S0 without act")


@pytest.mark.parametrize("channels_last", [True, False])
def test_global_response_norm(channels_last):
    x = _x(2, 3, 4, 5) if channels_last else _x(2, 5, 3, 4)
    m = _rand(GlobalResponseNorm(5, channels_last=channels_last))
    spatial, channel = ((1, 2), -1) if channels_last else ((2, 3), 1)
    shape = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
    g = torch.sqrt((x**2).sum(dim=spatial, keepdim=True))
    n = g / (g.mean(dim=channel, keepdim=True) + 1e-6)
    expected = x + m.weight.view(shape) * (x * n) + m.bias.view(shape)
    assert_close(m(x), expected)
    assert_close(
        GlobalResponseNorm(5, channels_last=channels_last).to(F64)(x), x, what="identity at init"
    )


def test_std_conv2d_standardizes_each_filter():
    x = _x(2, 3, 7, 7)
    conv = StdConv2d(3, 4, 3, stride=2, eps=1e-8).to(F64)
    w = conv.weight
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = ((w - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    expected = F.conv2d(x, (w - mean) / torch.sqrt(var + 1e-8), None, 2, 1)
    assert_close(conv(x), expected)


def test_squeeze_excite_blocks():
    x = _x(2, 8, 3, 3)
    se = SqueezeExcite(8, rd_ratio=0.25, gate_layer="hard_sigmoid").to(F64)
    assert se.conv_reduce.out_channels == 2 and se.act1.inplace
    s = F.conv2d(
        torch.relu(
            F.conv2d(x.mean((2, 3), keepdim=True), se.conv_reduce.weight, se.conv_reduce.bias)
        ),
        se.conv_expand.weight,
        se.conv_expand.bias,
    )
    assert_close(se(x), x * torch.clamp(s + 3, 0, 6) / 6, what="timm SE, hard sigmoid")
    tv = SqueezeExcitation(8, 3).to(F64)
    s = F.conv2d(
        torch.relu(F.conv2d(x.mean((2, 3), keepdim=True), tv.fc1.weight, tv.fc1.bias)),
        tv.fc2.weight,
        tv.fc2.bias,
    )
    assert_close(tv(x), x * torch.sigmoid(s), what="torchvision SE")


@pytest.mark.parametrize("layer", [DropPath(0.4), StochasticDepth(0.4, "row")], ids=["timm", "tv"])
def test_stochastic_depth_per_sample(layer):
    x = _x(6, 3, 2, 2)
    assert layer.eval()(x) is x
    layer.train()
    torch.manual_seed(5)
    keep = torch.empty(6, 1, 1, 1, dtype=F64).bernoulli_(0.6)
    torch.manual_seed(5)
    assert_close(layer(x), x * keep / 0.6)
    assert torch.equal(StochasticDepth(0.0, "row").train()(x), x)


def test_stochastic_depth_checks_its_arguments():
    with pytest.raises(ValueError, match="between 0 and 1"):
        StochasticDepth(1.5, "row")(torch.ones(2))
    with pytest.raises(ValueError, match="'batch' or 'row'"):
        StochasticDepth(0.5, "col")(torch.ones(2))


def test_conv2d_norm_activation_layout():
    block = Conv2dNormActivation(4, 8, kernel_size=3, stride=2, groups=4, activation_layer=nn.ReLU6)
    conv, norm, act = block
    assert conv.padding == (1, 1) and conv.bias is None and conv.groups == 4
    assert type(norm) is nn.BatchNorm2d and type(act) is nn.ReLU6 and act.inplace
    plain = Conv2dNormActivation(4, 8, kernel_size=4, norm_layer=None, activation_layer=None)
    assert len(plain) == 1 and plain[0].bias is not None and plain[0].padding == (1, 1)
    with pytest.warns(UserWarning, match="Don't use ConvNormActivation directly"):
        torchvision_ops.ConvNormActivation(4, 8)


def test_permute_is_a_view():
    x = torch.randn(2, 3, 4, 5)
    y = Permute([0, 2, 3, 1])(x)
    assert y.shape == (2, 4, 5, 3) and y.data_ptr() == x.data_ptr()


def test_make_divisible_and_get_padding():
    assert [timm_layers.make_divisible(v) for v in (4, 12, 16 * 4.5, 80 * 2.3)] == [8, 16, 72, 184]
    assert timm_layers.make_divisible(9.5, 8) == 16  # 8 would lose more than 10%
    assert [timm_layers.get_padding(k, s) for k, s in ((3, 1), (3, 2), (7, 2), (1, 2))] == [
        1,
        1,
        3,
        0,
    ]


def test_bad_input_errors_name_the_layer():
    with pytest.raises(
        ValueError, match="GroupNormAct: num_channels=10 is not a multiple of group_size=4"
    ):
        GroupNormAct(10, group_size=4)
    with pytest.raises(ValueError, match="EvoNorm2dS0a: num_features=10"):
        EvoNorm2dS0a(10, group_size=4)
    with pytest.raises(AssertionError, match="expected 4D input"):
        FilterResponseNormTlu2d(4)(torch.randn(2, 4, 3))


# --- install() / uninstall() ------------------------------------------------------------


def _snapshot():
    return {name: id(module) for name, module in sys.modules.items()}


def test_install_round_trip_leaves_sys_modules_as_before():
    before = _snapshot()
    added = ecosystem.install()
    assert added, "timm and torchvision are importable here: the stand-ins are not needed"
    try:
        assert ecosystem.install() == []  # idempotent
        assert set(added) <= set(sys.modules)
        assert importlib.util.find_spec("timm") is not None
        for cls, path in REAL_PATHS.items():
            module, _, name = path.rpartition(".")
            assert getattr(importlib.import_module(module), name) is cls, path
        from timm.layers import BatchNormAct2d as from_package
        from torchvision.ops import FrozenBatchNorm2d as tv_frozen

        assert from_package is BatchNormAct2d and tv_frozen is FrozenBatchNorm2d
        assert sys.modules["timm.layers.norm_act"].FrozenBatchNorm2d is FrozenBatchNorm2d
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("timm.models.resnet")
    finally:
        ecosystem.uninstall()
    assert _snapshot() == before
    assert ecosystem.installed() == []
    assert importlib.util.find_spec("timm") is None


def test_uninstall_leaves_a_replaced_entry_alone():
    added = ecosystem.install()
    replacement = type(sys)("timm.layers.grn")
    sys.modules["timm.layers.grn"] = replacement
    try:
        ecosystem.uninstall()
        assert sys.modules.get("timm.layers.grn") is replacement
        assert not any(name in sys.modules for name in added if name != "timm.layers.grn")
    finally:
        sys.modules.pop("timm.layers.grn", None)


def test_fixture_installs_for_one_test(stand_in_packages):
    assert "timm.layers.norm_act" in stand_in_packages
    assert importlib.import_module("timm.layers.evo_norm").EvoNorm2dB0 is EvoNorm2dB0


def test_real_modules_table_covers_every_reported_path():
    paths = {path.rpartition(".")[0] for path in REAL_PATHS.values()}
    assert paths <= set(ecosystem.REAL_MODULES)
    for module in (timm_norm, timm_norm_act, timm_response_norm):
        for name in module.__all__:
            obj = getattr(module, name)
            assert obj.__module__ in ecosystem.REAL_MODULES, name


def test_install_never_shadows_an_importable_package(tmp_path, monkeypatch):
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        added = ecosystem.install()
        assert added and all(name.split(".")[0] == "torchvision" for name in added)
        assert "timm" not in sys.modules
        assert importlib.import_module("timm").REAL
    finally:
        ecosystem.uninstall()
        sys.modules.pop("timm", None)
