"""GhostBatchNorm1d/2d vs the NumPy reference: per-ghost-batch statistics, the uneven last
ghost batch, the documented running-statistics rule, and BatchNorm equivalences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import normkit as nk
from normkit import reference_variants as rv
from normkit.functional.ghost_batch_norm import ghost_batch_norm, ghost_batch_sizes
from tests.conftest import assert_close

CASES = [
    ("GhostBatchNorm1d", (12, 3), 4, "divides evenly"),
    ("GhostBatchNorm1d", (10, 3), 4, "uneven last ghost batch (2)"),
    ("GhostBatchNorm1d", (9, 3), 4, "single left-over sample joins the previous batch"),
    ("GhostBatchNorm1d", (9, 3, 2), 4, "single left-over sample with length 2 stays"),
    ("GhostBatchNorm2d", (7, 3, 3, 2), 3, "2-D uneven"),
    ("GhostBatchNorm2d", (5, 3, 2, 2), 1, "virtual batch of one sample (4 values)"),
]


def test_ghost_batch_sizes_rule():
    assert ghost_batch_sizes(12, 4) == [4, 4, 4]
    assert ghost_batch_sizes(10, 4) == [4, 4, 2]
    assert ghost_batch_sizes(9, 4) == [4, 5]
    assert ghost_batch_sizes(9, 4, values_per_sample=2) == [4, 4, 1]
    assert ghost_batch_sizes(3, 4) == [3]
    assert ghost_batch_sizes(0, 4) == []
    for n in range(1, 40):
        for vbs in range(1, 9):
            for per_sample in (1, 3):
                if vbs * per_sample < 2:
                    continue
                sizes = ghost_batch_sizes(n, vbs, per_sample)
                assert sizes == rv.ghost_batch_sizes(n, vbs, per_sample)
                assert sum(sizes) == n
                assert len(sizes) <= 1 or all(s * per_sample >= 2 for s in sizes)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("cls", "shape", "vbs", "desc"), CASES, ids=[c[3] for c in CASES])
def test_matches_reference_over_steps(cls, shape, vbs, desc, dtype):
    layer = getattr(nk.nn, cls)(3, virtual_batch_size=vbs, momentum=0.3).to(dtype)
    with torch.no_grad():
        layer.weight.normal_(1.0, 0.5)
        layer.bias.normal_()
    w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    running_mean, running_var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = (torch.randn(shape, dtype=torch.float64) * 2 + step).to(dtype).requires_grad_(True)
        g = torch.randn(shape, dtype=torch.float64).to(dtype)
        y = layer(x)
        y.backward(g)
        xn, gn = x.detach().double().numpy(), g.double().numpy()
        y_ref, batch_mean, batch_var = rv.ghost_batch_norm_train(xn, vbs, w, b)
        dx_ref, dw_ref, db_ref = rv.ghost_batch_norm_train_backward(gn, xn, vbs, w)
        floor = float(np.abs(gn).max())
        assert_close(y, torch.from_numpy(y_ref), dtype, what=f"step {step} y")
        assert_close(x.grad, torch.from_numpy(dx_ref), dtype, what="dx", floor=floor)
        assert_close(layer.weight.grad, torch.from_numpy(dw_ref), dtype, what="dw", floor=floor)
        assert_close(layer.bias.grad, torch.from_numpy(db_ref), dtype, what="db", floor=floor)
        running_mean = 0.7 * running_mean + 0.3 * batch_mean
        running_var = 0.7 * running_var + 0.3 * batch_var
        assert_close(layer.running_mean, torch.from_numpy(running_mean), dtype, what="rm")
        assert_close(layer.running_var, torch.from_numpy(running_var), dtype, what="rv")
        assert int(layer.num_batches_tracked) == step + 1
        layer.weight.grad = layer.bias.grad = None
        # Each ghost batch is normalized on its own: per ghost batch mean 0.
        per_sample = math.prod(shape[2:])
        start = 0
        for size in ghost_batch_sizes(shape[0], vbs, per_sample):
            part = (y[start : start + size].detach().double() - layer.bias.double().reshape(
                (1, -1) + (1,) * (len(shape) - 2)
            )).transpose(0, 1).reshape(3, -1)  # fmt: skip
            assert part.mean(1).abs().max() < 1e-5
            start += size


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_not_larger_than_virtual_batch_is_exactly_batch_norm(momentum):
    ghost = nk.nn.GhostBatchNorm2d(3, virtual_batch_size=8, momentum=momentum).double()
    bn = nk.nn.BatchNorm2d(3, momentum=momentum).double()
    for n in (8, 5, 2):
        x = torch.randn(n, 3, 2, 3, dtype=torch.float64)
        assert torch.equal(ghost(x), bn(x))
    for (k, a), (_, b) in zip(ghost.state_dict().items(), bn.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    ghost.eval()
    bn.eval()
    x = torch.randn(20, 3, 2, 3, dtype=torch.float64)
    assert torch.equal(ghost(x), bn(x))  # inference is BatchNorm's, whatever the batch size


def test_cumulative_momentum_uses_the_documented_pooled_variance():
    layer = nk.nn.GhostBatchNorm1d(2, virtual_batch_size=3, momentum=None).double()
    history = []
    for _ in range(3):
        x = torch.randn(8, 2, dtype=torch.float64)  # ghost batches of 3, 3, 2
        layer(x)
        parts = x.split([3, 3, 2])
        m2 = sum(((p - p.mean(0)) ** 2).sum(0) for p in parts)
        history.append((x.mean(0), m2 / (8 - 3)))
    assert_close(layer.running_mean, torch.stack([h[0] for h in history]).mean(0))
    assert_close(layer.running_var, torch.stack([h[1] for h in history]).mean(0))


def test_channels_last_layout_is_kept():
    layer = nk.nn.GhostBatchNorm2d(3, virtual_batch_size=2)
    x = torch.randn(5, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    reference = nk.nn.GhostBatchNorm2d(3, virtual_batch_size=2)
    assert_close(y, reference(x.contiguous()))


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(7, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return ghost_batch_norm(x, None, None, w, b, True, virtual_batch_size=3)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_bad_input():
    for bad in (0, -2, 2.0, True, None):
        with pytest.raises(ValueError, match="virtual_batch_size must be a positive integer"):
            nk.nn.GhostBatchNorm1d(3, virtual_batch_size=bad)
    layer = nk.nn.GhostBatchNorm1d(3, virtual_batch_size=1)
    with pytest.raises(ValueError, match=r"GhostBatchNorm1d\(3\): virtual_batch_size=1 gives"):
        layer(torch.randn(4, 3))
    layer(torch.randn(4, 3, 2))  # two values per channel per ghost batch: fine
    with pytest.raises(ValueError, match=r"expected 4D input \(got 2D input\)"):
        nk.nn.GhostBatchNorm2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="expected 3 channels"):
        nk.nn.GhostBatchNorm1d(3, virtual_batch_size=2)(torch.randn(6, 4))
    with pytest.raises(TypeError, match="floating-point"):
        nk.nn.GhostBatchNorm1d(3, virtual_batch_size=2)(torch.ones(6, 3, dtype=torch.int32))
