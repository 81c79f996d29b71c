"""The layers as modules: timm's constructor defaults, attributes, initial state and repr;
checkpoints both ways; errors; EvoNorm-B0's guarded running variance; FX, torch.compile,
pickle, float64 factory arguments, half precision, empty batches, docstring examples."""

from __future__ import annotations

import copy
import doctest
import importlib
import io
import pickle
import sys
import warnings

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.functional import NonFiniteStatisticsWarning
from tests.batch_free._cases import CASES, input_shape, make_pair
from tests.conftest import assert_close
from tests.zoo.ecosystem import timm_norm
from tests.zoo.ecosystem import timm_response_norm as timm

ATTRIBUTES = {
    "FilterResponseNormTlu2d": ("apply_act", "rms", "eps"),
    "FilterResponseNormAct2d": ("rms", "eps"),
    "EvoNorm2dB0": ("apply_act", "momentum", "eps"),
    "EvoNorm2dS0": ("apply_act", "groups", "eps"),
    "EvoNorm2dS0a": ("apply_act", "groups", "eps"),
    "GlobalResponseNorm": ("eps", "spatial_dim", "channel_dim", "wb_shape"),
    "RmsNorm2d": ("normalized_shape", "eps", "elementwise_affine"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_defaults_attributes_initial_state_and_repr_are_timms(name):
    case = CASES[name]
    ours, theirs = case.ours(64, **case.kwargs), case.theirs(64, **case.kwargs)
    for attr in ATTRIBUTES[type(ours).__name__]:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    for attr in ("tau", "v"):
        assert (getattr(ours, attr, None) is None) == (getattr(theirs, attr, None) is None)
    state, state_t = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(state_t)
    for key in state:
        assert torch.equal(state[key], state_t[key]), key
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert repr(ours) == repr(theirs)
    assert ours.training


@pytest.mark.parametrize("name", list(CASES))
def test_timm_checkpoints_load_both_ways(name):
    _, theirs = make_pair(name, torch.float32, seed=4)
    buffer = io.BytesIO()
    torch.save(theirs.state_dict(), buffer)
    buffer.seek(0)
    fresh = CASES[name].ours(8, **CASES[name].kwargs)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))  # strict
    back = CASES[name].theirs(8, **CASES[name].kwargs)
    back.load_state_dict(fresh.state_dict())  # strict
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    x = torch.randn(input_shape(name, (2, 8, 4, 4)))
    fresh.eval()
    theirs.eval()
    assert_close(fresh(x), theirs(x), torch.float32, what=name)


def test_frn_act_builds_its_activation_as_timm():
    layer = nk.nn.FilterResponseNormAct2d(4, act_layer="leaky_relu", inplace=True)
    assert isinstance(layer.act, nn.LeakyReLU) and layer.act.inplace
    assert isinstance(nk.nn.FilterResponseNormAct2d(4, act_layer=None).act, nn.Identity)
    assert isinstance(nk.nn.FilterResponseNormAct2d(4, apply_act=False).act, nn.Identity)
    gelu = nk.nn.FilterResponseNormAct2d(4, act_layer=nn.GELU, inplace=True)  # no inplace arg
    assert isinstance(gelu.act, nn.GELU)
    slope = nk.nn.FilterResponseNormAct2d(4, act_layer=nn.LeakyReLU)
    slope.act.negative_slope = 0.3  # the module's own slope is what is computed
    x = torch.randn(2, 4, 3, 3)
    ref = timm.FilterResponseNormAct2d(4, act_layer=nn.LeakyReLU)
    ref.act.negative_slope = 0.3
    assert_close(slope(x), ref(x), torch.float32)


def test_timms_own_activation_classes_are_fused(monkeypatch):
    """Recognised by class: timm's GELU is the class at timm.layers.activations.GELU (here a
    stand-in registered under that module name), not any class of that name."""
    import types

    from normkit.nn._activations import fused_activation

    class GELU(nn.Module):  # timm.layers.activations.GELU: F.gelu in a module
        def forward(self, x):
            return nn.functional.gelu(x)

    GELU.__module__, GELU.__qualname__ = "timm.layers.activations", "GELU"
    impostor = type("GELU", (nn.Module,), {"__module__": "timm.layers.activations"})
    assert fused_activation(impostor()) is None  # the module is not imported: not timm's
    module = types.ModuleType("timm.layers.activations")
    module.GELU = GELU
    monkeypatch.setitem(sys.modules, "timm.layers.activations", module)
    assert fused_activation(impostor()) is None  # same name, another class
    layer = nk.nn.FilterResponseNormAct2d(4, act_layer=GELU)
    assert fused_activation(layer.act) == ("gelu", 0.01)
    x = torch.randn(2, 4, 3, 3)
    ref = timm.FilterResponseNormAct2d(4, act_layer=GELU)
    assert_close(layer(x), ref(x), torch.float32)
    assert fused_activation(nn.GELU(approximate="tanh")) is None
    assert fused_activation(nn.PReLU()) is None


def test_evo_norm_s0_group_size_decides():
    assert nk.nn.EvoNorm2dS0(64, groups=8, group_size=16).groups == 4
    assert nk.nn.EvoNorm2dS0a(48, group_size=8).groups == 6
    # timm computes no group statistics without the activation: any channel count goes
    layer = nk.nn.EvoNorm2dS0(48, apply_act=False)
    assert layer(torch.randn(2, 48, 3, 3)).shape == (2, 48, 3, 3)


def test_errors_name_the_layer_and_what_came():
    frn = nk.nn.FilterResponseNormTlu2d(8)
    with pytest.raises(ValueError, match=r"FilterResponseNormTlu2d\(8\): expected 4D input"):
        frn(torch.randn(2, 8, 3))
    with pytest.raises(ValueError, match=r"expected 8 channels at dim 1 of the input, got 6"):
        frn(torch.randn(2, 6, 3, 3))
    with pytest.raises(TypeError, match="floating-point input"):
        frn(torch.ones(2, 8, 3, 3, dtype=torch.long))
    grn = nk.nn.GlobalResponseNorm(8)
    with pytest.raises(ValueError, match=r"expected 8 channels at dim 3 of the input, got 5"):
        grn(torch.randn(2, 8, 3, 5))
    with pytest.raises(ValueError, match=r"not one normkit fuses"):
        nk.nn.FilterResponseNormAct2d(8, act_layer=nn.Tanh)
    with pytest.raises(ValueError, match=r"act_layer='mish' is not an activation normkit fuses"):
        nk.nn.FilterResponseNormAct2d(8, act_layer="mish")
    with pytest.raises(ValueError, match="num_features=12 is not a multiple of group_size=8"):
        nk.nn.EvoNorm2dS0(12, group_size=8)
    with pytest.raises(ValueError, match=r"num_channels \(12\) must be divisible by num_groups"):
        nk.nn.EvoNorm2dS0(12)(torch.randn(2, 12, 3, 3))
    with pytest.raises(ValueError, match="normalized_shape must have one entry"):
        nk.nn.RmsNorm2d((4, 4))
    with pytest.raises(ValueError, match="momentum must be a number in"):
        nk.nn.EvoNorm2dB0(8, momentum=None)
    nk.nn.EvoNorm2dB0(8, momentum=None, apply_act=False)  # an affine: momentum unused
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nk.nn.EvoNorm2dB0(8)(torch.randn(1, 8, 1, 1))
    with pytest.raises(ValueError, match="eps must be non-negative"):
        nk.nn.RmsNorm2d(8, eps=-1.0)


def test_functional_errors():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"tau .* and act='relu' exclude each other"):
        nk.functional.filter_response_norm(x, tau=torch.zeros(4), act="relu")
    with pytest.raises(ValueError, match="running_var must be given in evaluation"):
        nk.functional.evo_norm_b0(x, None, torch.ones(4))
    with pytest.raises(ValueError, match=r"expected v of size \(4,\)"):
        nk.functional.evo_norm_b0(x, None, torch.ones(3), training=True)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        nk.functional.rms_norm2d(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"expected weight of size \(3,\)"):
        nk.functional.global_response_norm(x, torch.ones(4), channels_last=True)


def test_evo_b0_running_var_rule_and_guard(backend):
    layer = nk.nn.EvoNorm2dB0(4, momentum=0.25).double()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64) * 2
    layer(x)
    var = x.var(dim=(0, 2, 3), unbiased=True)  # n / (n - 1) times the batch variance
    assert_close(layer.running_var, 0.75 + 0.25 * var)
    before = layer.running_var.clone()
    bad = x.clone()
    bad[0, 1, 2, 2] = float("nan")
    with pytest.warns(NonFiniteStatisticsWarning, match=r"EvoNorm2dB0\(4\)"):
        y = layer(bad)
    assert torch.equal(layer.running_var, before)  # timm would store NaN
    assert torch.isnan(y[:, 1]).all() and not torch.isnan(y[:, 0]).any()
    layer.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x)  # evaluation reads running_var, never writes it
    assert torch.equal(layer.running_var, before)


def _all_layers():
    return nn.Sequential(
        nk.nn.EvoNorm2dB0(8),
        nk.nn.FilterResponseNormTlu2d(8),
        nk.nn.EvoNorm2dS0(8, groups=4),
        nk.nn.FilterResponseNormAct2d(8, act_layer=nn.SiLU),
        nk.nn.EvoNorm2dS0a(8, groups=2, apply_act=False),
        nk.nn.RmsNorm2d(8),
        nk.nn.GlobalResponseNorm(8, channels_last=False),
    )


def test_fx_records_one_node_per_layer():
    model = _all_layers()
    traced = torch.fx.symbolic_trace(model)
    calls = [n for n in traced.graph.nodes if n.op == "call_function"]
    assert len(calls) == len(model)
    x = torch.randn(2, 8, 4, 4)
    assert_close(traced(x), model(x), torch.float32)
    model.eval()  # the traced graph follows the layer's mode (EvoNorm-B0)
    assert_close(traced(x), model(x), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_matches_eager(compile_backend, fresh_compile):
    torch.manual_seed(0)
    eager = _all_layers().double()
    for p in eager.parameters():
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend=compile_backend, fullgraph=True)
    for step in range(2):
        x = torch.randn(3, 8, 5, 5, dtype=torch.float64) + step
        g = torch.randn_like(x)
        xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ye, yc = eager(xe), compiled(xc)
        ye.backward(g)
        yc.backward(g)
        assert_close(yc, ye, what=f"step {step} y")
        assert_close(xc.grad, xe.grad, what="dx", floor=1.0)
        for (name, a), (_, b) in zip(
            compiled_model.named_parameters(), eager.named_parameters(), strict=True
        ):
            assert_close(a.grad, b.grad, what=name, floor=1.0)
    assert_close(compiled_model[0].running_var, eager[0].running_var)
    eager.eval()
    compiled_model.eval()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    assert_close(compiled(x), eager(x), what="eval")


def test_pickle_deepcopy_and_float64_factory():
    model = _all_layers()
    model(torch.randn(2, 8, 3, 3))
    x = torch.randn(2, 8, 3, 3)
    model.eval()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.eval()
        assert torch.equal(clone(x), model(x))
    for name, case in CASES.items():
        layer = case.ours(8, **case.kwargs, device="cpu", dtype=torch.float64)
        assert all(t.dtype == torch.float64 for t in layer.state_dict().values()), name
        x64 = torch.randn(input_shape(name, (2, 8, 3, 3)), dtype=torch.float64)
        assert layer(x64).dtype == torch.float64


@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_and_empty_batches_use_the_torch_formulation(name):
    ours, theirs = make_pair(name, torch.float32, seed=2)
    x = torch.randn(input_shape(name, (2, 8, 4, 4)))
    expected = theirs(x)
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    y = ours_bf16(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert_close(y, expected, rtol=5e-2, what=name)
    empty = ours(torch.randn(input_shape(name, (0, 8, 4, 4))))
    assert empty.shape == input_shape(name, (0, 8, 4, 4))


@pytest.mark.parametrize("module", ["normkit.nn.batch_free", "normkit.functional.batch_free"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_stand_ins_are_timms_classes():
    """The comparisons above are against the zoo's stand-ins of these exact timm classes."""
    assert timm.EvoNorm2dB0.__module__ == "timm.layers.evo_norm"
    assert timm.GlobalResponseNorm.__module__ == "timm.layers.grn"
    assert timm_norm.RmsNorm2d.__module__ == "timm.layers.norm"
