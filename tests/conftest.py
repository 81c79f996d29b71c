"""Shared fixtures: seeds, tolerances, thread count, backend parametrization."""

from __future__ import annotations

import os

import pytest
import torch

# Two xdist workers on a 2-core machine: one intra-op thread each.
torch.set_num_threads(int(os.environ.get("NORMKIT_TEST_THREADS", "1")))

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


def backends_available() -> list[str]:
    from normkit.backends import available

    return available()


@pytest.fixture(params=backends_available())
def backend(request):
    """Run a test once per backend that loads on this machine."""
    from normkit import use_backend

    with use_backend(request.param):
        yield request.param


@pytest.fixture
def fresh_compile():
    """No on-disk compile caches: torch's AOT-autograd cache key does not cover a custom
    op's registered backward, so a cache warmed by another version of normkit could replay
    a stale backward graph."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with (
        functorch_config.patch(enable_autograd_cache=False),
        inductor_config.patch(fx_graph_cache=False),
    ):
        yield
    torch._dynamo.reset()
