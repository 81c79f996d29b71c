"""Every tool on every real-world model shape (ResNet-style CNN, MLP, Transformer block with
LayerNorm), built from torch.nn's norm layers and from normkit.nn's."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools.recalibrate import NothingToRecalibrateWarning
from tests.conftest import assert_close
from tests.tools.models import MODEL_CASES, randomize_norm_state

LIBRARIES = {"torch": nn, "normkit": nk.nn}


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_all_tools(case, library):
    build, shape = MODEL_CASES[case]
    model = randomize_norm_state(build(LIBRARIES[library]))
    x = torch.randn(shape)
    has_bn = any(nk.tools.is_batch_norm(m) for m in model.modules())

    other = "torch" if library == "normkit" else "normkit"
    converted = nk.tools.convert(model, other)
    assert all(
        type(m).__module__.startswith(f"{other}.nn")
        for _, m in nk.tools.iter_norm_layers(converted)
    )
    assert_close(converted.eval()(x), copy.deepcopy(model).eval()(x))

    if has_bn:
        batches = [torch.randn(shape) for _ in range(3)]
        _, report = nk.tools.recalibrate(model, batches, return_report=True)
        assert report.layers and not report.not_reached
    else:
        with pytest.warns(NothingToRecalibrateWarning, match="no BatchNorm layer"):
            nk.tools.recalibrate(model, [x])

    model.eval()
    with torch.no_grad():
        expected = model(x)
        folded, report = nk.tools.fold(model, return_report=True)
        assert_close(folded(x), expected)
    assert (len(report) > 0) == has_bn

    before = [(n, m.training) for n, m in model.named_modules()]
    nk.tools.freeze(model, kinds=("batch", "layer"))
    model.train()
    assert all(
        not p.requires_grad for _, m in nk.tools.iter_norm_layers(model) for p in m.parameters()
    )
    nk.tools.unfreeze(model)
    model.eval()
    assert [(n, m.training) for n, m in model.named_modules()] == before

    s = nk.tools.summary(model, shape)
    assert s.norm_rows and s.total_params > 0
    findings = nk.tools.doctor(model, x)
    assert "nonfinite-stats" not in findings.codes()
    with nk.tools.monitor(model) as mon:
        model(x)
    assert len(mon.records) == len(list(nk.tools.iter_norm_layers(model)))
