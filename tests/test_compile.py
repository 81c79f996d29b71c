"""torch.compile: every layer traces without graph breaks and matches eager mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normkit as nk
from tests.conftest import assert_close


def _model():
    # No bias before a BatchNorm: its exact gradient is 0, and what comes out is rounding
    # noise that differs between any two correct implementations.
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nk.nn.BatchNorm2d(8),
        nn.ReLU(),
        nk.nn.GroupNorm(2, 8),
        nk.nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
        nn.Flatten(2),
        nk.nn.LayerNorm(25),
        nk.nn.RMSNorm(25),
        nn.Flatten(),
        nn.Linear(200, 6, bias=False),
        nk.nn.BatchNorm1d(6, momentum=None),
    )


def _check_against_eager(backend: str):
    torch.manual_seed(0)
    eager = _model()
    compiled_model = _model()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend=backend, fullgraph=True)
    for step in range(2):
        x = torch.randn(4, 3, 5, 5) + step
        y_eager, y_compiled = eager(x), compiled(x)
        assert_close(y_compiled, y_eager, torch.float32, what=f"train step {step}")
        g = torch.randn_like(y_eager)
        y_eager.backward(g)
        y_compiled.backward(g)
        # Stacked norms make some gradients cancel to nearly 0 (a BatchNorm's scale before a
        # GroupNorm): each is judged on the scale of the largest gradient of the model.
        scale = max(float(p.grad.abs().max()) for p in eager.parameters())
        for (name, a), (_, b) in zip(
            compiled_model.named_parameters(), eager.named_parameters(), strict=True
        ):
            assert_close(a.grad, b.grad, torch.float32, what=f"grad {name}", rtol=1e-4, floor=scale)
    # A running mean behind another norm is ~0 (rounding noise): judged on the buffers' scale.
    floor = max(float(b.abs().max()) for b in eager.buffers() if b.is_floating_point())
    for (name, a), (_, b) in zip(
        compiled_model.named_buffers(), eager.named_buffers(), strict=True
    ):
        assert_close(a, b, torch.float32, what=name, floor=floor)
    eager.eval()
    compiled_model.eval()
    x = torch.randn(3, 3, 5, 5)
    assert_close(compiled(x), eager(x), torch.float32, what="eval")


def test_compile_aot_eager_fullgraph(fresh_compile):
    _check_against_eager("aot_eager")


@pytest.mark.slow
def test_compile_inductor_fullgraph(fresh_compile):
    _check_against_eager("inductor")


def test_double_backward_under_compile_fails_as_it_does_for_torchs_layers(fresh_compile):
    """torch.compile's aot_autograd has no double backward, for torch's own layers too: a
    compiled normkit model raises the same error as the compiled torch model, where the
    eager models give the same second-order gradients."""

    def build(ns):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), ns.BatchNorm2d(8), nn.Tanh(),
            ns.GroupNorm(2, 8), nn.Flatten(1), ns.LayerNorm(8 * 25),
        ).double()  # fmt: skip

    def penalty(model):
        xi = torch.randn(
            4, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        )
        xi.requires_grad_(True)
        (gx,) = torch.autograd.grad(model(xi).pow(2).sum(), xi, create_graph=True)
        gx.pow(2).sum().backward()
        return [p.grad for p in model.parameters()]

    for ns in (nn, nk.nn):
        with pytest.raises(RuntimeError, match="does not currently support double backward"):
            penalty(torch.compile(build(ns), backend="aot_eager"))
    for a, b in zip(penalty(build(nk.nn)), penalty(build(nn)), strict=True):
        assert_close(a, b, torch.float64, what="second-order grad")
