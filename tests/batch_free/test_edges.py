"""Where the formulas have corners: ties inside a max (the gradient is split in half, as
torch.maximum splits it), planes of zeros in GlobalResponseNorm (torch's norm gives them a
zero gradient), NaN propagation, inputs with a large mean."""

from __future__ import annotations

import numpy as np
import torch

import normkit.functional as F
from normkit import reference_batch_free as R
from tests.batch_free._cases import STANDIN_F32_STATS_RTOL
from tests.conftest import assert_close
from tests.zoo.ecosystem import timm_response_norm as timm

F64 = torch.float64


def test_tlu_ties_split_the_gradient_like_torch_maximum(backend):
    """weight 0 makes z = bias everywhere; tau = bias puts every value on the threshold."""
    theirs = timm.FilterResponseNormTlu2d(4).double()
    with torch.no_grad():
        theirs.weight.zero_()
        theirs.bias.normal_()
        theirs.tau.copy_(theirs.bias)
    x = torch.randn(2, 4, 3, 3, dtype=F64)
    g = torch.randn_like(x)
    params = [p.detach().clone().requires_grad_(True) for p in theirs.parameters()]
    F.filter_response_norm(x, *params).backward(g)
    theirs(x).backward(g)
    half = g.sum((0, 2, 3)) / 2
    for ours, p in zip(params, theirs.parameters(), strict=True):
        assert_close(ours.grad, p.grad, rtol=STANDIN_F32_STATS_RTOL, what="vs timm")
    assert_close(params[1].grad, half, what="dbias")
    assert_close(params[2].grad, half, what="dtau")


def test_evo_b0_ties_split_the_gradient(backend):
    """One sample and v = 0: the batch std and the instance std are the same number."""
    x = torch.randn(1, 4, 3, 3, dtype=F64, requires_grad=True)
    v = torch.zeros(4, dtype=F64, requires_grad=True)
    w = torch.rand(4, dtype=F64) + 0.5
    g = torch.randn(1, 4, 3, 3, dtype=F64)
    F.evo_norm_b0(x, None, v, w, None, training=True).backward(g)
    xn = x.detach().numpy()
    var = R.evo_norm_b0_batch_var(xn)
    assert np.array_equal(np.sqrt(var + 1e-3), np.sqrt(xn.var(axis=(2, 3))[0] + 1e-3))
    dx, dv, _, _ = R.evo_norm_b0_backward(g.numpy(), xn, var, v.detach().numpy(), w.numpy())
    assert_close(x.grad, torch.from_numpy(dx), what="dx", floor=1.0)
    assert_close(v.grad, torch.from_numpy(dv), what="dv", floor=1.0)


def test_grn_zero_planes_have_finite_gradients(backend):
    x = torch.randn(2, 4, 3, 3, dtype=F64)
    x[0, 1] = 0.0  # one channel of one sample is all zeros: its norm is 0
    w, b = torch.randn(4, dtype=F64), torch.randn(4, dtype=F64)
    theirs = timm.GlobalResponseNorm(4, channels_last=False).double()
    with torch.no_grad():
        theirs.weight.copy_(w)
        theirs.bias.copy_(b)
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    F.global_response_norm(xa, w, b).backward(g)
    theirs(xb).backward(g)
    assert torch.isfinite(xa.grad).all()
    assert_close(xa.grad, xb.grad, what="dx", floor=1.0)
    dx, _, _ = R.global_response_norm_backward(g.numpy(), x.numpy(), w.numpy(), b.numpy())
    assert_close(xa.grad, torch.from_numpy(dx), what="dx vs reference", floor=1.0)


def test_nan_propagates_per_plane_or_group(backend):
    x = torch.randn(2, 8, 4, 4)
    x[1, 3, 2, 2] = float("nan")
    ones = torch.ones(8)
    y = F.filter_response_norm(x, ones, ones * 0)
    assert torch.isnan(y[1, 3]).all() and not torch.isnan(y[0]).any()
    assert not torch.isnan(y[1, torch.arange(8) != 3]).any()
    y = F.evo_norm_s0(x, 4, ones, ones, ones * 0)
    assert torch.isnan(y[1, 2:4]).all() and not torch.isnan(y[1, 4:]).any()
    y = F.rms_norm2d(x, ones)
    assert torch.isnan(y[1, :, 2, 2]).all() and torch.isnan(y).sum() == 8


def test_large_mean_keeps_the_variance_accurate(backend):
    """EvoNorm's variances come from shifted sums: 1e4 + N(0, 1) loses nothing in float64."""
    x = 1e4 + torch.randn(3, 4, 6, 6, dtype=F64)
    v, w = torch.ones(4, dtype=F64), torch.ones(4, dtype=F64)
    y = F.evo_norm_b0(x, None, v, w, None, training=True)
    xn = x.numpy()
    expected = R.evo_norm_b0(xn, R.evo_norm_b0_batch_var(xn), v.numpy(), w.numpy())
    assert_close(y, torch.from_numpy(expected))
    y = F.evo_norm_s0(x, 2, None, w, None)
    assert_close(y, torch.from_numpy(R.evo_norm_s0(xn, 2, None, w.numpy())))
