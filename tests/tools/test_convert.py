"""convert(): layer swaps keep weights and statistics; nothing else changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import ConversionError, convert, default_num_groups
from normkit.tools.convert import ORIGIN_ATTR
from tests.conftest import assert_close
from tests.tools.models import MODEL_CASES, ResNetish, mlp, randomize_norm_state


def _norm_types(model):
    return [type(m) for _, m in nk.tools.iter_norm_layers(model)]


def _non_norm_state(model):
    norm_names = {n for n, _ in nk.tools.iter_norm_layers(model)}
    return {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] not in norm_names}


def _outputs(model, x, train):
    m = copy.deepcopy(model).train(train)
    with torch.no_grad():
        return m(x)


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_torch_to_normkit_and_back_keeps_everything(case):
    build, shape = MODEL_CASES[case]
    model = randomize_norm_state(build(nn))
    x = torch.randn(shape)
    ours, report = convert(model, "normkit", return_report=True)
    assert len(report) == len(list(nk.tools.iter_norm_layers(model))) > 0
    assert all(t.__module__.startswith("normkit.nn") for t in _norm_types(ours))
    # The input model is untouched (deep copy by default).
    assert all(t.__module__.startswith("torch.nn") for t in _norm_types(model))
    # Nothing else changed: all other parameters and buffers identical.
    theirs, mine = _non_norm_state(model), _non_norm_state(ours)
    assert theirs.keys() == mine.keys()
    for key in theirs:
        assert torch.equal(theirs[key], mine[key]), key
    # Full state identical, same keys (norm layers included).
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key
    for train in (False, True):
        assert_close(_outputs(ours, x, train), _outputs(model, x, train), what=f"train={train}")
    back = convert(ours, "torch")
    assert [t.__name__ for t in _norm_types(back)] == [t.__name__ for t in _norm_types(model)]
    assert all(t.__module__.startswith("torch.nn") for t in _norm_types(back))
    for key, value in model.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key


def test_flags_dtype_and_requires_grad_are_kept():
    model = mlp(nn).double()
    model[1].eval()
    model[1].weight.requires_grad_(False)
    ours = convert(model, "normkit")
    assert ours[1].training is False and ours[4].training is True
    assert ours[1].weight.requires_grad is False and ours[1].bias.requires_grad is True
    assert ours[1].weight.dtype == torch.float64 and ours[1].running_var.dtype == torch.float64


def test_all_norm_types_and_options():
    model = nn.Sequential(
        nn.BatchNorm1d(4, affine=False, track_running_stats=False),
        nn.BatchNorm1d(4, momentum=None, bias=False),
        nn.InstanceNorm1d(4, affine=True, track_running_stats=True),
        nn.GroupNorm(2, 4, eps=1e-3),
        nn.LayerNorm(5, bias=False),
        nn.RMSNorm(5, eps=1e-6),
    )
    ours = convert(model, "normkit")
    for a, b in zip(model, ours, strict=True):
        assert type(a).__name__ == type(b).__name__ and type(b).__module__.startswith("normkit")
        assert repr(a) == repr(b)
    x = torch.randn(3, 4, 5)
    assert_close(_outputs(ours, x, True), _outputs(model, x, True))


def test_inplace_shared_modules_and_root():
    shared = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared)
    out = convert(model, "normkit", inplace=True)
    assert out is model and model[1] is model[3] and isinstance(model[1], nk.nn.BatchNorm1d)
    root = convert(nn.BatchNorm2d(3), "normkit")
    assert isinstance(root, nk.nn.BatchNorm2d)


def test_include_filter():
    model = ResNetish(nn)
    ours = convert(model, "normkit", include=lambda name, m: name.startswith("layers.1"))
    converted = [
        n for n, m in nk.tools.iter_norm_layers(ours) if type(m).__module__.startswith("normkit")
    ]
    assert converted and all(n.startswith("layers.1") for n in converted)


def test_group_rule():
    assert [default_num_groups(c) for c in (64, 32, 48, 24, 3, 256)] == [32, 32, 16, 8, 1, 32]


@pytest.mark.parametrize("num_groups", [None, 4, lambda c: c // 2])
def test_bn_to_group_and_back(num_groups):
    model = randomize_norm_state(ResNetish(nn))
    options = {} if num_groups is None else {"num_groups": num_groups}
    gn, report = convert(model, "group", return_report=True, **options)
    bns = dict(nk.tools.iter_norm_layers(model))
    for name, layer in nk.tools.iter_norm_layers(gn):
        assert isinstance(layer, nk.nn.GroupNorm)
        c = layer.num_channels
        expected = (
            {None: default_num_groups(c), 4: 4}.get(num_groups)
            if not callable(num_groups)
            else c // 2
        )
        assert layer.num_groups == expected
        assert torch.equal(layer.weight, bns[name].weight) and torch.equal(
            layer.bias, bns[name].bias
        )
    assert all(r.note == "outputs change" for r in report.replaced)
    gn(torch.randn(2, 3, 8, 8))  # runs
    back = convert(gn, "original")
    for name, layer in nk.tools.iter_norm_layers(back):
        assert type(layer) is type(bns[name]) and repr(layer) == repr(bns[name])
        assert not hasattr(layer, ORIGIN_ATTR)
    for key, value in model.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key


def test_group_keeps_trained_affine_on_the_way_back():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8))
    gn = convert(model, "group")
    with torch.no_grad():
        gn[1].weight.fill_(2.0)
    back = convert(gn, "original")
    assert torch.equal(back[1].weight, torch.full((8,), 2.0))
    assert torch.equal(back[1].running_var, model[1].running_var)


def test_errors_are_clear_and_atomic():
    with pytest.raises(ConversionError, match=r"unknown conversion target 'nope'.*'normkit'"):
        convert(nn.BatchNorm1d(3), "nope")
    model = nn.Sequential(nn.BatchNorm2d(8), nn.BatchNorm2d(6))
    with pytest.raises(ConversionError, match=r"layer '1'.*num_groups \(4\) must divide the 6"):
        convert(model, "group", inplace=True, num_groups=4)
    assert all(isinstance(m, nn.BatchNorm2d) for m in model)  # nothing changed


def test_no_norm_layers_gives_empty_report():
    model = nn.Sequential(nn.Linear(3, 3))
    out, report = convert(model, "normkit", return_report=True)
    assert len(report) == 0 and "no matching layer" in str(report)
    assert torch.equal(out[0].weight, model[0].weight)
