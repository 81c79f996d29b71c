"""torch.compile: every layer traces without graph breaks and matches eager mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normkit as nk
from tests.conftest import assert_close


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nk.nn.BatchNorm2d(8),
        nn.ReLU(),
        nk.nn.GroupNorm(2, 8),
        nk.nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
        nn.Flatten(2),
        nk.nn.LayerNorm(25),
        nk.nn.RMSNorm(25),
        nn.Flatten(),
        nn.Linear(200, 6),
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
        for (name, a), (_, b) in zip(
            compiled_model.named_parameters(), eager.named_parameters(), strict=True
        ):
            assert_close(a.grad, b.grad, torch.float32, what=f"grad {name}", rtol=1e-4)
    for (name, a), (_, b) in zip(
        compiled_model.named_buffers(), eager.named_buffers(), strict=True
    ):
        assert_close(a, b, torch.float32, what=name)
    eager.eval()
    compiled_model.eval()
    x = torch.randn(3, 3, 5, 5)
    assert_close(compiled(x), eager(x), torch.float32, what="eval")


def test_compile_aot_eager_fullgraph(fresh_compile):
    _check_against_eager("aot_eager")


@pytest.mark.slow
def test_compile_inductor_fullgraph(fresh_compile):
    _check_against_eager("inductor")
