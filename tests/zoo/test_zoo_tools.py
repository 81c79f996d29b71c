"""Every zoo model through normkit: ``convert(model, "normkit")`` replaces every norm layer
(whatever library defined it) and the converted model computes what the original does, in
float64 to 1e-10; checkpoints load both ways; ``convert(model, "torch")`` restores the
original classes; ``fold`` and every other tool run.

The models are the zoo's test sizes with their norm layers' state randomized (so the
comparison is not at the identity initialization), on the timm / torchvision stand-ins
registered under their real module names.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import normkit as nk
from tests.conftest import assert_close
from tests.zoo.fixtures import stand_in_packages  # noqa: F401  (fixture)
from tests.zoo.norm_state import randomize_norm_state
from tests.zoo.registry import ZOO

pytestmark = pytest.mark.usefixtures("stand_in_packages")

NAMES = sorted(ZOO)

#: timm computes these layers' statistics in float32 even for float64 inputs (normkit in the
#: input's precision): against them, float64 parity is float32's (1e-5). Each layer is
#: checked against the float64 reference at 1e-10 in tests/batch_free.
FLOAT32_STATISTICS = {
    "FilterResponseNormTlu2d",
    "FilterResponseNormAct2d",
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
}


def _rtol(name: str) -> float:
    classes = {c.__name__ for c in ZOO[name].norm_classes}
    return 1e-5 if classes & FLOAT32_STATISTICS else 1e-10


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ZOO[name].build("test").double()
    randomize_norm_state(model, 0)
    return model


def _input(name: str) -> torch.Tensor:
    return torch.randn(ZOO[name].input_shape("test"), dtype=torch.float64)


def _norm_layers(model):
    return [m for m in model.modules() if type(m) in ZOO_NORMS]


ZOO_NORMS = frozenset().union(*(entry.norm_classes for entry in ZOO.values()))


def _run(model, x, *, train: bool, seed: int = 1):
    """Output, input gradient and parameter gradients of one forward/backward (the same
    dropout / stochastic-depth draws on every call)."""
    model.train(train)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = model(x)
    grad = torch.randn_like(y, generator=torch.Generator().manual_seed(seed))
    y.backward(grad)
    params = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return y.detach(), x.grad, params


@pytest.mark.parametrize("name", NAMES)
def test_every_norm_layer_converts_and_the_model_computes_the_same(name):
    model = _model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nk.tools.ConversionWarning)  # nothing left behind
        converted, report = nk.tools.convert(model, "normkit", return_report=True)
    assert not report.skipped, report.left_summary()
    assert _norm_layers(converted) == []  # no source norm class is left
    assert len(report.replaced) == len(_norm_layers(model)) > 0
    assert all(type(m).__module__.startswith("normkit.nn") for m in _converted(converted, report))

    x = _input(name)
    rtol = _rtol(name)
    ours, theirs = copy.deepcopy(converted), copy.deepcopy(model)
    for step in range(3):  # training steps: outputs, gradients, then the running statistics
        y_a, dx_a, dp_a = _run(ours, x + step, train=True, seed=step)
        y_b, dx_b, dp_b = _run(theirs, x + step, train=True, seed=step)
        assert_close(y_a, y_b, rtol=rtol, what=f"{name} train output, step {step}")
        assert_close(
            dx_a, dx_b, rtol=rtol, what=f"{name} input gradient", floor=float(dx_b.abs().max())
        )
        assert dp_a.keys() == dp_b.keys()
        # A gradient that cancels to ~0 (a bias before another norm) is judged against the
        # scale of the model's gradients.
        scale = max(float(g.abs().max()) for g in dp_b.values())
        for key in dp_b:
            assert_close(dp_a[key], dp_b[key], rtol=rtol, what=f"{name} grad {key}", floor=scale)
    for (ka, a), (kb, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert ka == kb
        assert_close(a.double(), b.double(), rtol=rtol, what=f"{name} state {ka}")
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert_close(ours(x), theirs(x), rtol=rtol, what=f"{name} eval output")


def _converted(model, report):
    modules = dict(model.named_modules())
    return [modules[r.name] for r in report.replaced]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoints_load_both_ways_and_torch_restores_the_original_classes(name):
    model = _model(name)
    converted = nk.tools.convert(model, "normkit", quiet=True)
    assert list(converted.state_dict()) == list(model.state_dict())
    fresh = nk.tools.convert(ZOO[name].build("test").double(), "normkit", quiet=True)
    fresh.load_state_dict(model.state_dict(), strict=True)  # a source checkpoint loads
    back_into = ZOO[name].build("test").double()
    back_into.load_state_dict(converted.state_dict(), strict=True)  # and back
    restored = nk.tools.convert(converted, "torch")
    assert [type(m) for m in restored.modules()] == [type(m) for m in model.modules()]
    for (ka, a), (kb, b) in zip(
        restored.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(a, b), ka
    x = _input(name)
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), copy.deepcopy(model).eval()(x))


@pytest.mark.parametrize("name", [n for n in NAMES if ZOO[n].foldable])
def test_fold_equals_the_converted_model_in_eval(name):
    converted = nk.tools.convert(_model(name), "normkit", quiet=True).eval()
    x = _input(name)
    folded, report = nk.tools.fold(converted, example=x, return_report=True)
    assert len(report.folded) > 0
    with torch.no_grad():
        assert_close(folded(x), converted(x), what=f"{name} folded")


@pytest.mark.parametrize("name", NAMES)
def test_every_tool_runs(name):
    model = nk.tools.convert(_model(name), "normkit", quiet=True)
    x = _input(name)
    summary = nk.tools.summary(model, tuple(x.shape))
    assert summary.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert str(summary)
    findings = nk.tools.doctor(model, x)
    assert len({f.code for f in findings}) == len(findings)  # repeated findings are grouped
    if ZOO[name].foldable:
        nk.tools.recalibrate(model, [x, x + 1])
    before = copy.deepcopy(model.state_dict())
    nk.tools.freeze(model)
    nk.tools.unfreeze(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with nk.tools.monitor(model) as mon:
        model.train()
        model(x)
    assert mon.records


def _norms_before_exclusive_activations(model) -> set[str]:
    """The BatchNorms of torchvision's Conv2dNormActivation blocks that have an activation."""
    out = set()
    for name, block in model.named_modules():
        if type(block).__name__ == "Conv2dNormActivation" and len(block) == 3:
            out.add(f"{name}.1")
    return out


def test_fusion_takes_exactly_the_exclusive_activation_modules():
    mobilenet = _model("mobilenet_v2")
    _, report = nk.tools.convert(mobilenet, "normkit", return_report=True)
    assert {p.norm for p in report.fused} == _norms_before_exclusive_activations(mobilenet)
    assert {p.act for p in report.fused} == {"relu6"}
    # torchvision's ResNet blocks call one shared ReLU twice (after bn1 and after the add):
    # the stem's BatchNorm, with its own ReLU, fuses as modules; the blocks' sites fuse in
    # their forwards (bn1 -> relu, bn2 -> add -> relu).
    _, report = nk.tools.convert(_model("resnet18"), "normkit", return_report=True)
    blocks = [f"layer{i}.0" for i in range(1, 5)]
    assert [(p.norm, p.activation, p.residual) for p in report.fused] == [
        ("bn1", "relu", False),
        *((f"{b}.{bn}", f"{b}.relu", bn == "bn2") for b in blocks for bn in ("bn1", "bn2")),
    ]
    unfused, report = nk.tools.convert(_model("densenet121"), "normkit", return_report=True,
                                       fuse=False)  # fmt: skip
    assert report.fused == [] and not any(
        isinstance(m, nk.nn.FusedActivation) for m in unfused.modules()
    )
