"""Masked InstanceNorm and GroupNorm vs the per-sample gather oracle: each sample's valid
positions gathered into a (1, C, n_i) batch and normalized by torch's layer; a sample
without valid positions (GroupNorm) outputs zeros. Running statistics of InstanceNorm vs
the reference rule (and vs torch's when every position is valid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import reference
from tests.conftest import assert_close
from tests.masked._oracle import hole_mask, padded, poison, prefix_mask

SHAPES = {
    "1d prefix, lengths 2..full": ((4, 6, 9), [9, 2, 5, 9]),
    "1d holes": ((3, 6, 8), "holes"),
    "1d N=1": ((1, 6, 7), "holes"),
    "2d holes": ((2, 6, 3, 5), "holes"),
    "3d prefix": ((2, 6, 2, 2, 4), [4, 3]),
}


def _sample_frames(t: torch.Tensor, mask: torch.Tensor, i: int) -> torch.Tensor:
    """Sample ``i``'s valid positions of ``t (N, C, *)`` as ``(1, C, n_i)``."""
    return t[i].reshape(t.shape[1], -1)[:, mask[i].reshape(-1)].unsqueeze(0)


def _batch(shape, lengths, generator, layout=""):
    mask = (
        hole_mask((shape[0], *shape[2:]), generator)
        if lengths == "holes"
        else prefix_mask(lengths, (shape[0], *shape[2:]))
    )
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 3 + 2
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    x, g = poison(x, mask), poison(g, mask)
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(), mask, g


def _per_sample_oracle(layer_fn, x, mask, g, params):
    """Outputs and input gradients (zeros at pads) and accumulated parameter gradients of
    ``layer_fn`` applied to each sample's valid positions."""
    y = torch.zeros_like(x.detach())
    dx = torch.zeros_like(x.detach())
    for i in range(x.shape[0]):
        valid = mask[i].reshape(-1)
        if not valid.any():
            continue
        frames = _sample_frames(x.detach(), mask, i).clone().requires_grad_()
        out = layer_fn(frames)
        out.backward(_sample_frames(g, mask, i))
        y[i].reshape(x.shape[1], -1)[:, valid] = out[0].detach()
        dx[i].reshape(x.shape[1], -1)[:, valid] = frames.grad[0]
    return y, dx, [None if p is None else p.grad for p in params]


def _check(y, x, mask, expected_y, expected_dx, pairs):
    valid = mask.unsqueeze(1).expand_as(y)
    assert_close(y[valid], expected_y[valid], torch.float64, what="y")
    assert torch.equal(padded(y, mask), torch.zeros_like(padded(y, mask)))
    assert_close(x.grad[valid], expected_dx[valid], torch.float64, what="dx", floor=1.0)
    assert torch.equal(padded(x.grad, mask), torch.zeros_like(padded(x.grad, mask)))
    for what, mine, theirs in pairs:
        assert_close(mine, theirs, torch.float64, what=what, floor=1.0)


@pytest.mark.parametrize("layout", ["", "channels_last"])
@pytest.mark.parametrize("groups", [1, 3, 6])
@pytest.mark.parametrize("case", list(SHAPES))
def test_group_norm_per_sample(backend, case, groups, layout):
    shape, lengths = SHAPES[case]
    generator = torch.Generator().manual_seed(1)
    ours = nk.nn.GroupNorm(groups, shape[1]).double()
    oracle = nn.GroupNorm(groups, shape[1]).double()
    with torch.no_grad():
        for layer in (ours, oracle):
            layer.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
            layer.bias.copy_(torch.linspace(-1, 1, shape[1]))
    x, mask, g = _batch(shape, lengths, generator, layout)
    y = ours(x, mask=mask)
    y.backward(g)
    if layout:
        assert y.is_contiguous(memory_format=torch.channels_last) or x.dim() != 4
    expected_y, expected_dx, (dw, db) = _per_sample_oracle(
        oracle, x, mask, g, [oracle.weight, oracle.bias]
    )
    _check(
        y,
        x,
        mask,
        expected_y,
        expected_dx,
        [("dw", ours.weight.grad, dw), ("db", ours.bias.grad, db)],
    )


def test_group_norm_sample_without_valid_positions_outputs_zeros(backend):
    generator = torch.Generator().manual_seed(2)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1] = False
    mask[2, 4:] = False
    x = poison(torch.randn(3, 4, 6, generator=generator, dtype=torch.float64), mask)
    g = poison(torch.randn(3, 4, 6, generator=generator, dtype=torch.float64), mask)
    x.requires_grad_()
    gn = nk.nn.GroupNorm(2, 4).double()
    y = gn(x, mask=mask)
    y.backward(g)
    oracle = nn.GroupNorm(2, 4).double()
    expected_y, expected_dx, (dw, db) = _per_sample_oracle(
        oracle, x, mask, g, [oracle.weight, oracle.bias]
    )
    assert torch.equal(y[1], torch.zeros_like(y[1]))
    assert torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
    _check(
        y, x, mask, expected_y, expected_dx, [("dw", gn.weight.grad, dw), ("db", gn.bias.grad, db)]
    )


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("case", list(SHAPES))
def test_instance_norm_per_sample_and_running_statistics(backend, case, affine):
    shape, lengths = SHAPES[case]
    d = len(shape) - 2
    generator = torch.Generator().manual_seed(4)
    ours = getattr(nk.nn, f"InstanceNorm{d}d")(shape[1], affine=affine, track_running_stats=True)
    oracle = nn.InstanceNorm1d(shape[1], affine=affine)
    ours, oracle = ours.double(), oracle.double()
    if affine:
        with torch.no_grad():
            for layer in (ours, oracle):
                layer.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
                layer.bias.copy_(torch.linspace(-1, 1, shape[1]))
    running = [ours.running_mean.numpy().copy(), ours.running_var.numpy().copy()]
    for _ in range(2):
        x, mask, g = _batch(shape, lengths, generator)
        y = ours(x, mask=mask)
        y.backward(g)
        params = [oracle.weight, oracle.bias]
        expected_y, expected_dx, grads = _per_sample_oracle(oracle, x, mask, g, params)
        pairs = []
        if affine:
            pairs = [("dw", ours.weight.grad, grads[0]), ("db", ours.bias.grad, grads[1])]
        _check(y, x, mask, expected_y, expected_dx, pairs)
        for p in (*ours.parameters(), *oracle.parameters()):
            p.grad = None
        running = reference.masked_instance_norm_running_stats(
            *running, np.nan_to_num(x.detach().numpy(), posinf=0.0), mask.numpy(), 0.1
        )
        assert_close(ours.running_mean, torch.from_numpy(running[0]), what="running_mean")
        assert_close(ours.running_var, torch.from_numpy(running[1]), what="running_var")
    ours.eval()
    x, mask, _ = _batch(shape, lengths, generator)
    with torch.no_grad():
        y = ours(x, mask=mask)
    expected = reference.masked_batch_norm_eval(
        np.nan_to_num(x.detach().numpy(), posinf=0.0), mask.numpy(), *running,
        *(p.detach().numpy() for p in (ours.weight, ours.bias)) if affine else (None, None),
    )  # fmt: skip
    assert_close(y, torch.from_numpy(expected), what="eval with running statistics")


def test_instance_norm_all_valid_equals_torch_running_statistics(backend):
    """With every position valid the masked rule is torch's (same outputs and buffers)."""
    generator = torch.Generator().manual_seed(5)
    ours = nk.nn.InstanceNorm1d(3, track_running_stats=True, momentum=0.3).double()
    theirs = nn.InstanceNorm1d(3, track_running_stats=True, momentum=0.3).double()
    x = torch.randn(4, 3, 7, generator=generator, dtype=torch.float64) * 2 + 1
    mask = torch.ones(4, 7, dtype=torch.bool)
    assert_close(ours(x, mask=mask), theirs(x))
    assert_close(ours.running_mean, theirs.running_mean)
    assert_close(ours.running_var, theirs.running_var)


def test_instance_norm_unbatched_input_takes_an_unbatched_mask(backend):
    x = torch.randn(3, 8, dtype=torch.float64)
    mask = torch.arange(8) < 5
    y = nk.nn.InstanceNorm1d(3)(x, mask=mask)
    expected = nn.InstanceNorm1d(3)(x[:, :5].unsqueeze(0))[0]
    assert_close(y[:, :5], expected)
    assert torch.equal(y[:, 5:], torch.zeros(3, 3, dtype=torch.float64))
