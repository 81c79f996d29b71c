"""The running-statistics op (``normkit::running_stats_update``): the numba kernel path and
the torch path against the rule written out with torch ops."""

from __future__ import annotations

import warnings

import pytest
import torch

from normkit._shared import NonFiniteStatisticsWarning
from tests.kernels.conftest import numba_ops  # noqa: F401  (skips without numba)

update = torch.ops.normkit.running_stats_update


def _stats(dtype, channels=37, scale=1.0):
    g = torch.Generator().manual_seed(channels)
    mean = torch.randn(channels, generator=g, dtype=dtype) * scale
    var = torch.rand(channels, generator=g, dtype=dtype) * scale
    running = (torch.randn(channels, generator=g, dtype=dtype), torch.rand(channels, dtype=dtype))
    return mean, var, running


def _expected(running, stat, factor, scale=1.0):
    """torch's rule: lerp towards the (Bessel-scaled) batch statistic."""
    return None if running is None else running.lerp(stat.to(running.dtype) * scale, factor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.9, 1.0, 1.0 / 3, None])
@pytest.mark.parametrize("which", ["both", "mean", "var"])
def test_follows_the_rule(dtype, momentum, which):
    mean, var, (rm, rv) = _stats(dtype, scale=1e3)
    rm = rm if which != "var" else None
    rv = rv if which != "mean" else None
    nbt = torch.tensor(4)
    factor = momentum if momentum is not None else 1 / 5
    want_m, want_v = _expected(rm, mean, factor), _expected(rv, var, factor, 64 / 63)
    update(rm, rv, nbt, mean, var, 64.0, momentum, "bn")
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    for got, want in ((rm, want_m), (rv, want_v)):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=tol, atol=tol * 1e3)
    assert int(nbt) == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["mean", "var"])
@pytest.mark.parametrize("buffers", ["float32", "float64 (torch path)"])
def test_non_finite_statistics_write_nothing_and_warn(bad, where, buffers):
    mean, var, (rm, rv) = _stats(torch.float32)
    if buffers.startswith("float64"):
        rm, rv = rm.double(), rv.double()
    (mean if where == "mean" else var)[5] = bad
    before = rm.clone(), rv.clone()
    versions = rm._version, rv._version
    nbt = torch.tensor(3)
    with pytest.warns(NonFiniteStatisticsWarning, match="layer9: the batch statistics"):
        update(rm, rv, nbt, mean, var, 10.0, 0.1, "layer9")
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1]) and int(nbt) == 3
    assert (rm._version, rv._version) == versions
    # Also checked when the buffer it belongs to is absent.
    with pytest.warns(NonFiniteStatisticsWarning):
        update(rm, None, None, mean, var, 10.0, 0.1, "layer9")
    assert torch.equal(rm, before[0])


def test_bumps_the_version_counter_like_an_in_place_op():
    """A graph that saved a running buffer notices the update, as with torch's lerp_."""
    mean, var, (rm, rv) = _stats(torch.float32)
    versions = rm._version, rv._version
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        update(rm, rv, None, mean, var, 2.0, 0.1, "bn")
    assert rm._version > versions[0] and rv._version > versions[1]


@pytest.mark.parametrize(
    "case", ["float64 buffers", "strided buffer", "float16 buffers", "strided stats"]
)
def test_other_buffers_take_the_torch_path(case):
    mean, var, (rm, rv) = _stats(torch.float32)
    if case == "float64 buffers":
        rm, rv = rm.double(), rv.double()
    elif case == "float16 buffers":
        rm, rv = rm.half(), rv.half()
    elif case == "strided buffer":
        rm = torch.zeros(2 * rm.shape[0])[::2].copy_(rm)
    else:
        mean = torch.zeros(2 * mean.shape[0])[::2].copy_(mean)
    want_m, want_v = _expected(rm, mean, 0.1), _expected(rv, var, 0.1, 2.0)
    update(rm, rv, None, mean, var, 2.0, 0.1, "bn")
    torch.testing.assert_close(rm, want_m)
    torch.testing.assert_close(rv, want_v)


def test_an_empty_batch_only_counts():
    mean, var, (rm, rv) = _stats(torch.float32)
    before = rm.clone()
    nbt = torch.tensor(0)
    update(rm, rv, nbt, mean, var, 0.0, 0.1, "bn")
    assert torch.equal(rm, before) and int(nbt) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_keep_finite_restores_exactly_the_non_finite_updates(dtype):
    """keep_running_stats_finite (numba kernel for float32/64, torch elsewhere) after an
    in-place update: huge finite values stay; a NaN/Inf anywhere in the updated buffers puts
    the previous values back while those were finite; buffers that already held a NaN keep
    any update."""
    from normkit.backends.running import keep_running_stats_finite

    big = torch.finfo(dtype).max / 2
    zeros, ones = torch.zeros(64, dtype=dtype), torch.ones(64, dtype=dtype)
    for bad in (float("nan"), float("inf"), -float("inf"), None):
        for where in (0, 63):
            mean, var = torch.full((64,), big, dtype=dtype), torch.zeros(64, dtype=dtype)
            if bad is not None:
                (var if where else mean)[where] = bad
            updated = (mean.clone(), var.clone())
            nbt = torch.tensor(3)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                keep_running_stats_finite(mean, var, nbt, torch.cat((zeros, ones)), "L")
            if bad is None:
                assert torch.equal(mean, updated[0]) and torch.equal(var, updated[1])
                assert int(nbt) == 4 and not caught
            else:
                assert torch.equal(mean, zeros) and torch.equal(var, ones)
                assert int(nbt) == 3 and len(caught) == 1
            mean, var = updated[0].clone(), updated[1].clone()
            poisoned = torch.cat((torch.full((64,), float("nan"), dtype=dtype), ones))
            keep_running_stats_finite(mean, var, None, poisoned, "L")
            torch.testing.assert_close(mean, updated[0], equal_nan=True, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# The branch-free form (statistics off the CPU: CUDA), run here on CPU data.


class _OffCPU(torch.Tensor):
    """A CPU tensor that reports ``is_cpu == False``: it takes the code path of CUDA
    statistics (branch-free, no host synchronization, no warning) on this CPU-only machine."""

    @property
    def is_cpu(self) -> bool:
        return False


def _off_cpu(t):
    return torch.Tensor._make_subclass(_OffCPU, t)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_branch_free_update_follows_the_rule(momentum):
    mean, var, (rm, rv) = _stats(torch.float32)
    nbt = torch.tensor(4)
    factor = momentum if momentum is not None else 1 / 5
    want_m, want_v = _expected(rm, mean, factor), _expected(rv, var, factor, 10 / 9)
    update(rm, rv, nbt, _off_cpu(mean), _off_cpu(var), 10.0, momentum, "bn")
    torch.testing.assert_close(rm, want_m)
    torch.testing.assert_close(rv, want_v)
    assert int(nbt) == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["mean", "var"])
def test_branch_free_update_leaves_the_buffers_on_non_finite_statistics(bad, where):
    mean, var, (rm, rv) = _stats(torch.float32)
    (mean if where == "mean" else var)[3] = bad
    before, nbt = (rm.clone(), rv.clone()), torch.tensor(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: it would need a host synchronization
        update(rm, rv, nbt, _off_cpu(mean), _off_cpu(var), 10.0, None, "bn")
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1]) and int(nbt) == 4


keep_finite = torch.ops.normkit.keep_running_stats_finite


@pytest.mark.parametrize("off_cpu", [False, True], ids=["cpu", "branch-free"])
def test_keep_finite_keeps_finite_updates_and_restores_non_finite_ones(off_cpu):
    """``keep_running_stats_finite`` (the torch backend's guard): torch's kernel updated the
    buffers in place; the previous values come back if they became non-finite."""
    wrap = _off_cpu if off_cpu else (lambda t: t)
    mean, var, (rm, rv) = _stats(torch.float32)
    nbt = torch.tensor(2)
    before = torch.cat((rm, rv))
    rm, rv = wrap(mean.clone()), wrap(var.clone())
    keep_finite(rm, rv, nbt, wrap(before), "bn")
    assert torch.equal(rm, mean) and torch.equal(rv, var) and int(nbt) == 3
    poisoned = mean.clone()
    poisoned[1] = float("nan")
    rm, rv = wrap(poisoned.clone()), wrap(var * 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keep_finite(rm, rv, nbt, wrap(before), "bn")
    assert torch.equal(torch.cat((rm, rv)), before) and int(nbt) == 3
    assert [w.category for w in caught] == ([] if off_cpu else [NonFiniteStatisticsWarning])
    # Running statistics that were already non-finite keep the update (nothing to protect).
    rm, rv = wrap(poisoned.clone()), wrap(var * 2)
    keep_finite(rm, rv, nbt, wrap(torch.cat((poisoned, var))), "bn")
    assert torch.isnan(rm[1]) and torch.equal(rv, var * 2) and int(nbt) == 4
