"""Helpers for the kernel tests: the numba ops, layouts, thread counts."""

from __future__ import annotations

import contextlib

import pytest
import torch

# numba is a core dependency: a backend that does not import fails these tests (an
# importorskip here would turn a broken kernel module into a silently skipped folder).
import normkit.backends.numba_backend as numba_backend
from normkit.backends import _numba_runtime as runtime
from tests.kernels import _ops as numba_ops

__all__ = ["numba_backend", "numba_ops", "runtime"]

LAYOUTS = ["contiguous", "channels_last", "strided", "expanded"]


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` torch (hence kernel) threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Kernels chunk work per thread: run once serially and once with two chunks."""
    with torch_threads(request.param):
        yield request.param


def as_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t (N, C, L)`` with the same values in the given memory layout."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":  # (N, C, L) view of an (N, L, C) buffer, as channels_last gives
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "strided":  # every other element of a wider buffer
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "expanded":  # one value per (n, c) broadcast over L (stride 0)
        return t[..., :1].expand(t.shape)
    raise ValueError(layout)


def rel_err(actual: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """Normwise relative error ``max|a - e| / max(max|e|, floor)`` over the finite entries.

    ``floor`` is the natural scale of a quantity that can be exactly 0 (a variance).

    Non-finite entries (NaN, +-inf) must match exactly, position and value.
    """
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    finite = torch.isfinite(e)
    assert torch.equal(torch.isnan(a), torch.isnan(e)), "NaN positions differ"
    assert torch.equal(a[~finite & ~torch.isnan(e)], e[~finite & ~torch.isnan(e)]), "inf differs"
    a, e = a[finite], e[finite]
    if e.numel() == 0:
        return 0.0
    scale = e.abs().max().clamp_min(max(floor, 1e-30))
    return float((a - e).abs().max() / scale)


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides on every dim of size > 1 (size-1 dims have no meaningful stride)."""
    return a.shape == b.shape and all(
        sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape, strict=True) if n > 1
    )


TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
