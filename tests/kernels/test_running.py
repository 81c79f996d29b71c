"""The running-statistics update kernel against the torch op (the contract)."""

from __future__ import annotations

import pytest
import torch

from normkit.backends import torch_ops
from tests.kernels.conftest import numba_backend

nb = numba_backend


def _stats(dtype, channels=37, scale=1.0):
    g = torch.Generator().manual_seed(channels)
    mean = torch.randn(channels, generator=g, dtype=dtype) * scale
    var = torch.rand(channels, generator=g, dtype=dtype) * scale
    running = (torch.randn(channels, generator=g, dtype=dtype), torch.rand(channels, dtype=dtype))
    return mean, var, running


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factor", [0.1, 0.5, 0.9, 1.0, 1.0 / 3])
@pytest.mark.parametrize("which", ["both", "mean", "var"])
def test_matches_the_torch_op(dtype, factor, which):
    mean, var, (rm, rv) = _stats(dtype, scale=1e3)
    got_m, got_v = (
        (rm.clone() if which != "var" else None),
        (rv.clone() if which != "mean" else None),
    )
    ref_m, ref_v = (
        (rm.clone() if which != "var" else None),
        (rv.clone() if which != "mean" else None),
    )
    assert nb.running_stats_update(got_m, got_v, mean, var, factor, 64 / 63)
    assert torch_ops.running_stats_update(ref_m, ref_v, mean, var, factor, 64 / 63)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    for got, ref in ((got_m, ref_m), (got_v, ref_v)):
        if ref is not None:
            torch.testing.assert_close(got, ref, rtol=tol, atol=tol * 1e3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["mean", "var"])
def test_non_finite_statistics_write_nothing(bad, where):
    mean, var, (rm, rv) = _stats(torch.float32)
    (mean if where == "mean" else var)[5] = bad
    before = rm.clone(), rv.clone()
    versions = rm._version, rv._version
    assert not nb.running_stats_update(rm, rv, mean, var, 0.1, 1.0)
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1])
    assert (rm._version, rv._version) == versions
    # Also checked when the buffer it belongs to is absent.
    assert not nb.running_stats_update(rm, None, mean, var, 0.1, 1.0)
    assert torch.equal(rm, before[0])


def test_bumps_the_version_counter_like_an_in_place_op():
    """A graph that saved a running buffer notices the update, as with torch's lerp_."""
    mean, var, (rm, rv) = _stats(torch.float32)
    versions = rm._version, rv._version
    assert nb.running_stats_update(rm, rv, mean, var, 0.1, 1.0)
    assert rm._version > versions[0] and rv._version > versions[1]


@pytest.mark.parametrize(
    "case", ["float64 buffers", "strided buffer", "float16 buffers", "strided stats"]
)
def test_other_buffers_take_the_torch_op(case):
    mean, var, (rm, rv) = _stats(torch.float32)
    if case == "float64 buffers":
        rm, rv = rm.double(), rv.double()
    elif case == "float16 buffers":
        rm, rv = rm.half(), rv.half()
    elif case == "strided buffer":
        rm = torch.zeros(2 * rm.shape[0])[::2].copy_(rm)
    else:
        mean = torch.zeros(2 * mean.shape[0])[::2].copy_(mean)
    ref_m, ref_v = rm.clone(), rv.clone()
    assert nb.running_stats_update(rm, rv, mean, var, 0.1, 2.0)
    assert torch_ops.running_stats_update(ref_m, ref_v, mean, var, 0.1, 2.0)
    torch.testing.assert_close(rm, ref_m)
    torch.testing.assert_close(rv, ref_v)
