"""The converters for the registry of ``nk.tools.convert``: from each timm class (the zoo's
stand-in, under its real dotted path) to normkit's layer of the same name, with the same
state dict, flags and outputs; ``check`` says when a conversion would not be exact; whole
zoo models (ResNetV2-FRN, ResNetV2-EvoNorm-S0, ConvNeXt-V2, ConvNeXt-atto-RMS, NormMixNet)
compute the same after their batch-free layers are replaced."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools.converters_batch_free import CONVERTERS
from tests.batch_free._cases import CASES, STANDIN_F32_STATS_RTOL, input_shape, make_pair
from tests.conftest import assert_close
from tests.zoo.ecosystem import timm_response_norm as timm
from tests.zoo.norm_state import randomize_norm_state
from tests.zoo.registry import ZOO

BY_PATH = {path: (build, check) for path, build, check, _ in CONVERTERS}


def _path(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _convert(model: nn.Module) -> nn.Module:
    """Every module with a converter replaced by its ``build`` (on a deep copy)."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if _path(module) in BY_PATH:
            build, check = BY_PATH[_path(module)]
            assert check(module) is None, name
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, build(module))
    return model


def test_every_entry_names_a_timm_class_once_with_one_sentence(stand_in_packages):
    paths = [path for path, *_ in CONVERTERS]
    assert len(paths) == len(set(paths)) == 7
    for path, build, check, why in CONVERTERS:
        module_name, _, cls_name = path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        assert _path(cls.__new__(cls)) == path
        assert callable(build) and callable(check)
        assert why.endswith(".") and why.count(". ") == 0, why
    assert {_path(case.theirs.__new__(case.theirs)) for case in CASES.values()} == set(paths)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CASES))
def test_build_gives_the_same_layer(name, dtype):
    _, theirs = make_pair(name, dtype, seed=5)
    params = list(theirs.parameters())
    if params:
        params[0].requires_grad_(False)
    build, check = BY_PATH[_path(theirs)]
    assert check(theirs) is None
    ours = build(theirs)
    assert type(ours).__name__ == type(theirs).__name__
    assert type(ours).__module__ == "normkit.nn.batch_free"
    assert ours.training == theirs.training
    flags = [p.requires_grad for p in ours.parameters()]
    assert flags == [p.requires_grad for p in theirs.parameters()]
    assert not flags or not flags[0]
    state, state_t = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(state_t)
    for key in state:
        assert state[key].dtype == state_t[key].dtype and torch.equal(state[key], state_t[key])
    assert repr(ours) == repr(theirs)
    rtol = None
    if dtype == torch.float64:
        rtol = STANDIN_F32_STATS_RTOL if CASES[name].f32_stats else 1e-10
    for step, training in enumerate((True, True, False)):
        ours.train(training)
        theirs.train(training)
        x = torch.randn(input_shape(name, (3, 8, 5, 4)), dtype=dtype) + step
        assert_close(ours(x), theirs(x), dtype, rtol=rtol, what=f"{name} step {step}")
        for key, value in theirs.state_dict().items():
            assert_close(ours.state_dict()[key], value, dtype, rtol=rtol, what=key)


def test_eval_flag_is_kept():
    theirs = timm.EvoNorm2dB0(4).eval()
    assert not BY_PATH[_path(theirs)][0](theirs).training


def test_check_explains_what_is_not_exact():
    tanh = timm.FilterResponseNormAct2d(4, act_layer=nn.Tanh)
    build, check = BY_PATH[_path(tanh)]
    assert "Tanh() is not one normkit fuses" in check(tanh)
    with pytest.raises(ValueError, match="cannot convert FilterResponseNormAct2d"):
        build(tanh)
    assert "PReLU" in check(timm.FilterResponseNormAct2d(4, act_layer=nn.PReLU))
    gelu_tanh = timm.FilterResponseNormAct2d(4, act_layer=nn.GELU)
    gelu_tanh.act.approximate = "tanh"
    assert check(gelu_tanh) is not None
    half = timm.FilterResponseNormTlu2d(4).to(torch.bfloat16)
    assert "bfloat16" in BY_PATH[_path(half)][1](half)
    b0 = timm.EvoNorm2dB0(4, momentum=None)
    assert "momentum=None" in BY_PATH[_path(b0)][1](b0)


def test_frn_act_keeps_timms_activation_module():
    theirs = timm.FilterResponseNormAct2d(4, act_layer=nn.LeakyReLU, inplace=True)
    theirs.act.negative_slope = 0.2
    ours = BY_PATH[_path(theirs)][0](theirs)
    assert isinstance(ours.act, nn.LeakyReLU) and ours.act is not theirs.act
    assert ours.act.negative_slope == 0.2 and ours.act.inplace
    x = torch.randn(2, 4, 3, 3)
    assert_close(ours(x), theirs(x), torch.float32)


MODELS = {
    "resnetv2_50d_frn": True,
    "resnetv2_50d_evos": True,
    "normmix": True,
    "convnextv2_tiny": False,
    "convnextv2_atto": False,
    "convnext_atto_rms": False,
}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_zoo_models_compute_the_same_after_conversion(model_name):
    entry = ZOO[model_name]
    torch.manual_seed(0)
    model = randomize_norm_state(entry.build("test")).double()
    ours = _convert(model)
    converted = [m for m in ours.modules() if type(m).__module__ == "normkit.nn.batch_free"]
    assert converted and not any(_path(m) in BY_PATH for m in ours.modules())
    assert list(ours.state_dict()) == list(model.state_dict())
    # timm's float32 statistics, compounded over the layers of a model
    rtol = 20 * STANDIN_F32_STATS_RTOL if MODELS[model_name] else 1e-9
    x = torch.randn(entry.input_shape("test"), dtype=torch.float64)
    for mode in ("train", "eval"):
        model.train(mode == "train")
        ours.train(mode == "train")
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), model(xb)
        assert_close(ya, yb, rtol=rtol, what=f"{model_name} {mode} y")
        g = torch.randn_like(yb)
        ya.backward(g)
        yb.backward(g)
        assert_close(xa.grad, xb.grad, rtol=rtol, what=f"{model_name} {mode} dx")
    for (key, a), (_, b) in zip(ours.state_dict().items(), model.state_dict().items(), strict=True):
        assert_close(a, b, rtol=rtol, what=key)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_converted_zoo_models_agree_across_backends_in_float64(model_name):
    """normkit computes in float64 throughout: its two backends agree at 1e-10 on a whole
    converted model (timm's own float32 statistics are what limits the comparison above)."""
    entry = ZOO[model_name]
    torch.manual_seed(0)
    ours = _convert(randomize_norm_state(entry.build("test")).double())
    x = torch.randn(entry.input_shape("test"), dtype=torch.float64)
    results = []
    for backend in ("numba", "torch"):
        model = copy.deepcopy(ours)
        with nk.use_backend(backend):
            xi = x.clone().requires_grad_(True)
            y = model(xi)
            y.backward(torch.ones_like(y))
            model.eval()
            results.append((y, xi.grad, model(x), model.state_dict()))
    (y_a, dx_a, ye_a, sd_a), (y_b, dx_b, ye_b, sd_b) = results
    assert_close(y_a, y_b, what="train y")
    assert_close(dx_a, dx_b, what="dx")
    assert_close(ye_a, ye_b, what="eval y")
    for key in sd_a:
        assert_close(sd_a[key], sd_b[key], what=key)
