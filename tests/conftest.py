"""Shared fixtures: seeds, tolerances, thread count, backend parametrization."""

from __future__ import annotations

import os

import pytest
import torch

# Two xdist workers on a 2-core machine: one intra-op thread each.
torch.set_num_threads(int(os.environ.get("NORMKIT_TEST_THREADS", "1")))
# The shipped crossover table, whatever `normkit tune` measured on this machine (the tests
# of tuned tables point the variable at their own files).
os.environ["NORMKIT_CROSSOVER"] = "shipped"

# Normwise relative tolerance per dtype (max |a - b| / max |b|): the project's parity standard.
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def assert_close(actual, expected, dtype=None, rtol=None, what="", floor=0.0):
    """max |actual - expected| <= rtol * max(max |expected|, floor); same shape and NaNs.

    ``floor`` is the natural scale of a quantity that can cancel to nearly zero (an input
    gradient with N=2 is O(eps) while its terms are O(|grad_out|)).
    """
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: {actual!r} vs {expected!r}"
        return
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if rtol is None:
        rtol = RTOL[dtype or expected.dtype]
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), f"{what}: NaN positions differ"
    a, e = a[~nan_e], e[~nan_e]
    if e.numel() == 0:
        return
    scale = e.abs().max().clamp_min(max(float(floor), 1e-12))
    err = (a - e).abs().max()
    assert err <= rtol * scale, f"{what}: max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["numba", "torch"])
def backend(request):
    """Run a test once per backend. Both must load here (numba is a core dependency): a
    backend that does not load fails its tests instead of dropping out of them."""
    from normkit import use_backend

    with use_backend(request.param):
        yield request.param


@pytest.fixture
def path(request):
    """The call path (``tests.paths.CallPath``) a test runs on, given with
    ``parametrize("path", [...], indirect=True)``: its backend forced and, when compiled,
    Dynamo's caches fresh for the whole test."""
    with request.param.active():
        yield request.param


@pytest.fixture
def fresh_compile():
    """No graph from an earlier test and no on-disk compile caches (tests.paths)."""
    from tests.paths import fresh_compile

    with fresh_compile():
        yield
