"""torch.compile (fullgraph: the valid count and the running statistics are read inside
custom ops) and FX tracing of models that pass masks to their normalization layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.functional import NormInputError
from tests.conftest import assert_close


class _Masked(nn.Module):
    """Every masked layer, in a row, on (N, C, L) sequences."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList(
            [
                nk.nn.BatchNorm1d(8),
                nk.nn.InstanceNorm1d(8, affine=True, track_running_stats=True),
                nk.nn.GroupNorm(2, 8),
                nk.nn.BatchRenorm1d(8, rmax=1.5, dmax=0.5),
                nk.nn.BatchNormAct1d(8, act="relu", momentum=None),
                nk.nn.SyncBatchNorm(8),
            ]
        )

    def forward(self, x, mask):
        h = self.conv(x)
        for layer in self.layers:
            h = layer(h, mask=mask)
        return h


def _batches(steps):
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        lengths = torch.tensor([9, 4, 6, 2]) if step % 2 == 0 else torch.tensor([7, 9, 3, 5])
        yield (
            torch.randn(4, 3, 9, generator=generator) + step,
            nk.functional.lengths_to_mask(lengths, 9),
        )


def _check_against_eager(backend):
    torch.manual_seed(0)
    eager, compiled_model = _Masked(), _Masked()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, backend=backend, fullgraph=True)
    for step, (x, mask) in enumerate(_batches(2)):
        y_eager, y_compiled = eager(x, mask), compiled(x, mask)
        assert_close(y_compiled, y_eager, torch.float32, what=f"train step {step}")
        g = torch.randn_like(y_eager)
        y_eager.backward(g)
        y_compiled.backward(g)
        # The conv's bias feeds a BatchNorm: its exact gradient is 0 and what comes out is
        # rounding noise, judged on the scale of the model's largest gradient.
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
    before = {k: v.clone() for k, v in compiled_model.state_dict().items()}
    with pytest.raises(NormInputError, match=r"BatchNorm1d\(8\): the mask has no valid position"):
        compiled(torch.randn(4, 3, 9), torch.zeros(4, 9, dtype=torch.bool))
    for key, value in compiled_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    eager.eval()
    compiled_model.eval()
    x, mask = next(_batches(1))
    assert_close(compiled(x, mask), eager(x, mask), torch.float32, what="eval")


def test_compile_aot_eager_fullgraph(fresh_compile):
    _check_against_eager("aot_eager")


@pytest.mark.slow
def test_compile_inductor_fullgraph(fresh_compile):
    _check_against_eager("inductor")


def test_fx_records_one_node_per_masked_layer():
    model = _Masked()
    traced = torch.fx.symbolic_trace(model)
    calls = [n.target.__name__ for n in traced.graph.nodes if n.op == "call_function"]
    assert calls == [
        "batch_norm_forward",
        "instance_norm_forward",
        "group_norm_forward",
        "batch_renorm_forward",
        "batch_norm_act_forward",
        "sync_batch_norm_forward",
    ]
    reference = copy.deepcopy(model)
    for x, mask in _batches(2):
        assert_close(traced(x, mask), reference(x, mask), torch.float32)
    for (name, a), (_, b) in zip(traced.named_buffers(), reference.named_buffers(), strict=True):
        assert_close(a, b, torch.float32, what=name)
