"""Batch-norm passes over ``x (N, C, L)`` C-contiguous (NCHW, NCDHW, BatchNorm1d on
(N, C, L)): the parallel sweeps behind the ``ncl`` layout of :mod:`normkit.kernels.batch_norm`.

The data is swept linearly as one flat array cut into one chunk per thread; a chunk walks
the ``(n, c)`` planes it overlaps and keeps per-thread, per-channel partial sums, which a
serial step then adds (no shared accumulator crosses threads). Planes shorter than
``SHORT_PLANE`` are processed as rows of ``C * L`` values with per-position coefficients.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from normkit.kernels._common import (
    affine_act,
    chunk_bounds,
    grad_apply,
    grad_sums,
    shift_of,
    shifted_sums,
)
from normkit.kernels._jit import kernel
from normkit.kernels.batch_norm_nlc import (
    _nlc_apply,
    _nlc_grad_apply,
    _nlc_grad_sums,
    _nlc_split,
    _nlc_sums,
)

# Planes shorter than this are processed as rows of C * L values with per-position
# coefficients: a loop over 49 values (7x7) would run mostly in the scalar remainder (docs/kernels.md, R8).
SHORT_PLANE = 64
# The elementwise passes keep per-plane scalar coefficients down to this plane length
# (measured on 7x7 planes: 1.4x faster than per-position coefficient rows; slower below
# about 36 values, where a plane is mostly loop overhead).
SHORT_PLANE_APPLY = 40

# ---------------------------------------------------------------------------------------
# ncl: x (N, C, L) flattened; plane p = n * M + m has coefficient index m = p % M.


@kernel(parallel=True)
def _ncl_sums(xf, L, M, shift, bounds, s1, s2):
    for t in prange(bounds.shape[0] - 1):
        p = bounds[t]
        hi = bounds[t + 1]
        while p < hi:
            plane = p // L
            end = min(hi, (plane + 1) * L)
            m = plane % M
            a, b = shifted_sums(xf[p:end], shift[m])
            s1[t, m] += a
            s2[t, m] += b
            p = end


@kernel(parallel=True)
def _ncl_apply(xf, yf, L, M, mh, a, b, bounds, act, slope):
    for t in prange(bounds.shape[0] - 1):
        p = bounds[t]
        hi = bounds[t + 1]
        while p < hi:
            plane = p // L
            end = min(hi, (plane + 1) * L)
            m = plane % M
            affine_act(xf[p:end], yf[p:end], mh[m], a[m], b[m], act, slope)
            p = end


@kernel(parallel=True)
def _ncl_grad_sums(gf, xf, L, M, mh, a, b, bounds, act, slope, s1, s2):
    for t in prange(bounds.shape[0] - 1):
        p = bounds[t]
        hi = bounds[t + 1]
        while p < hi:
            plane = p // L
            end = min(hi, (plane + 1) * L)
            m = plane % M
            u, v = grad_sums(gf[p:end], xf[p:end], mh[m], a[m], b[m], act, slope)
            s1[t, m] += u
            s2[t, m] += v
            p = end


@kernel(parallel=True)
def _ncl_grad_apply(gf, xf, dxf, L, M, mh, a, b, k1, k2, k3, bounds, act, slope):
    for t in prange(bounds.shape[0] - 1):
        p = bounds[t]
        hi = bounds[t + 1]
        while p < hi:
            plane = p // L
            end = min(hi, (plane + 1) * L)
            m = plane % M
            grad_apply(
                gf[p:end], xf[p:end], dxf[p:end], mh[m], k1[m], k2[m], k3[m], a[m], b[m],
                act, slope,
            )  # fmt: skip
            p = end


@kernel
def _sum_rows(parts):
    """Column sums of a (chunks, M) float64 partials array."""
    out = np.zeros(parts.shape[1])
    for t in range(parts.shape[0]):
        for m in range(parts.shape[1]):
            out[m] += parts[t, m]
    return out


@kernel
def _ncl_shift(xf, N, M, L):
    """Per coefficient: mean of its first <= 64 values (over l, then n), in the data type."""
    shift = np.empty(M, xf.dtype)
    k = min(64, N * L)
    if L >= k:
        for m in range(M):
            shift[m] = shift_of(xf[m * L : m * L + k])
        return shift
    # Short planes: the first k // L planes of every channel, then part of the next, read
    # in memory order with one running sum per channel (the same additions in the same
    # order as channel by channel, without a dependency chain through every value).
    acc = np.zeros(M)
    planes, rest = divmod(k, L)
    for n in range(planes + (rest > 0)):
        width = L if n < planes else rest
        for m in range(M):
            base = (n * M + m) * L
            s = acc[m]
            for j in range(width):
                s += xf[base + j]
            acc[m] = s
    for m in range(M):
        s = acc[m] / k
        shift[m] = s if np.isfinite(s) else 0.0
    return shift


@kernel
def _expand(v, L):
    """Per-channel ``v (C,)`` -> per-position ``(C * L,)``: ``out[c * L + l] = v[c]``."""
    out = np.empty(v.shape[0] * L, v.dtype)
    for c in range(v.shape[0]):
        for j in range(L):
            out[c * L + j] = v[c]
    return out


@kernel
def _fold(parts, L):
    """``(chunks, C * L)`` float64 partials -> per-channel sums ``(C,)``."""
    C = parts.shape[1] // L
    out = np.zeros(C)
    for t in range(parts.shape[0]):
        for c in range(C):
            s = 0.0
            for j in range(L):
                s += parts[t, c * L + j]
            out[c] += s
    return out


@kernel
def _ncl_moments(x, threads):
    N, M, L = x.shape
    xf = x.reshape(-1)
    shift = _ncl_shift(xf, N, M, L)
    if L < SHORT_PLANE:  # rows of C * L values, per-position shift (vectorizes)
        x2 = x.reshape(N, M * L)
        bounds, cb = _nlc_split(N, M * L, threads)
        s1 = np.zeros((bounds.shape[0] - 1, M * L))
        s2 = np.zeros((bounds.shape[0] - 1, M * L))
        _nlc_sums(x2, _expand(shift, L), bounds, cb, s1, s2)
        return shift, _fold(s1, L), _fold(s2, L)
    bounds = chunk_bounds(N * M * L, 1, threads, 16)
    s1 = np.zeros((bounds.shape[0] - 1, M))
    s2 = np.zeros((bounds.shape[0] - 1, M))
    _ncl_sums(xf, L, M, shift, bounds, s1, s2)
    return shift, _sum_rows(s1), _sum_rows(s2)


@kernel
def _ncl_apply_all(x, y, mh, a, b, act, slope, threads):
    N, M, L = x.shape
    if L < SHORT_PLANE_APPLY:
        bounds = chunk_bounds(N, M * L, threads, 1)
        _nlc_apply(
            x.reshape(N, M * L), y.reshape(N, M * L), _expand(mh, L), _expand(a, L),
            _expand(b, L), bounds, act, slope,
        )  # fmt: skip
        return
    bounds = chunk_bounds(N * M * L, 1, threads, 16)
    _ncl_apply(x.reshape(-1), y.reshape(-1), L, M, mh, a, b, bounds, act, slope)


@kernel
def _ncl_grad_moments(g, x, mh, a, b, act, slope, threads):
    N, M, L = x.shape
    if L < SHORT_PLANE:
        bounds, cb = _nlc_split(N, M * L, threads)
        s1 = np.zeros((bounds.shape[0] - 1, M * L))
        s2 = np.zeros((bounds.shape[0] - 1, M * L))
        _nlc_grad_sums(
            g.reshape(N, M * L), x.reshape(N, M * L), _expand(mh, L), _expand(a, L),
            _expand(b, L), bounds, cb, act, slope, s1, s2,
        )  # fmt: skip
        return _fold(s1, L), _fold(s2, L)
    bounds = chunk_bounds(N * M * L, 1, threads, 16)
    s1 = np.zeros((bounds.shape[0] - 1, M))
    s2 = np.zeros((bounds.shape[0] - 1, M))
    _ncl_grad_sums(g.reshape(-1), x.reshape(-1), L, M, mh, a, b, bounds, act, slope, s1, s2)
    return _sum_rows(s1), _sum_rows(s2)


@kernel
def _ncl_grad_apply_all(g, x, dx, mh, a, b, k1, k2, k3, act, slope, threads):
    N, M, L = x.shape
    if L < SHORT_PLANE_APPLY:
        bounds = chunk_bounds(N, M * L, threads, 1)
        _nlc_grad_apply(
            g.reshape(N, M * L), x.reshape(N, M * L), dx.reshape(N, M * L), _expand(mh, L),
            _expand(a, L), _expand(b, L), _expand(k1, L), _expand(k2, L), _expand(k3, L),
            bounds, act, slope,
        )  # fmt: skip
        return
    bounds = chunk_bounds(N * M * L, 1, threads, 16)
    _ncl_grad_apply(
        g.reshape(-1), x.reshape(-1), dx.reshape(-1), L, M, mh, a, b, k1, k2, k3, bounds,
        act, slope,
    )  # fmt: skip
