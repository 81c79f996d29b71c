"""Batch normalization kernels, in two memory layouts.

* ``ncl``: ``x (N, C, L)`` C-contiguous (NCHW, NCDHW, BatchNorm1d on (N, C, L)). The data
  is swept linearly as one flat array cut into one chunk per thread (rule R4); a chunk walks
  the ``(n, c)`` planes it overlaps and keeps per-thread, per-channel partial sums.
* ``nlc``: ``x (R, C)`` rows with channels fastest (channels_last, BatchNorm1d on (N, C)):
  rows are cut into chunks (and channels into blocks when rows are few), loops are
  vectorized along ``C`` with float32 partials flushed to float64 every ``ROW_BLOCK`` rows
  (rule R9).

Statistics are one pass of shifted sums (shift = mean of the first <= 64 values of each
channel): ``mean = k + S1 / n``, ``var = S2 / n - (S1 / n)**2`` with float64 accumulation.
Elementwise passes compute ``act((x - m) * a + b)``; ``m`` is the mean rounded to the data
type and ``b`` absorbs the rounding residue, so a large mean (1e4 + N(0, 1)) costs no accuracy.
Backward (DESIGN.md, with ``dy = grad * act'(pre)`` and ``n`` values per channel)::

    sum_dy = sum(dy);  sum_dy_xhat = sum(dy * (x - mean)) * invstd
    dx = w * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)
       = k1 * dy - k2 * (x - m) - k3,   k1 = w * invstd,  k2 = k1 * invstd * sum_dy_xhat / n

The ``bn_*`` drivers below are the entry points (one Numba dispatch per operation); the
``moments``/``apply``/``grad_moments``/``grad_apply`` stubs pick the layout's parallel
kernel by the rank of ``x`` at compile time.
"""

from __future__ import annotations

import numpy as np
from numba import prange
from numba.extending import overload

from normkit.kernels._common import (
    IDENTITY,
    ROW_BLOCK,
    affine_act,
    affine_act_row,
    chunk_bounds,
    grad_apply,
    grad_apply_row,
    grad_sums,
    grad_sums_row,
    grad_sums_rows4,
    shift_of,
    shifted_sums,
    shifted_sums_rows4,
)
from normkit.kernels._jit import entry, kernel

# Planes shorter than this are processed as rows of C * L values with per-position
# coefficients: a loop over 49 values (7x7) would run mostly in the scalar remainder (R8).
SHORT_PLANE = 64
# The elementwise passes keep per-plane scalar coefficients down to this plane length
# (measured on 7x7 planes: 1.4x faster than per-position coefficient rows; slower below
# about 36 values, where a plane is mostly loop overhead).
SHORT_PLANE_APPLY = 40
# Channels-last rows shorter than these are processed several at a time, as one longer row
# with tiled coefficients, so inner loops stay long (C = 64 would be 4 vectors). Measured on
# (100352, 64): reductions like long tiles; elementwise passes, whose coefficient arrays
# compete with three streams for L1 sets, prefer short ones (512 was 2.7x slower than 256).
TILE_SUMS = 1024
TILE_ELEMENTWISE = 256
# Channels-last tensors of at most this many values per thread (1 MiB of float32, half a
# core's L2) run statistics and normalization per column block in one parallel region.
SMALL_NLC = 1 << 18

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
    per = N * L
    k = min(64, per)
    for m in range(M):
        if L >= k:
            shift[m] = shift_of(xf[m * L : m * L + k])
        else:
            s = 0.0
            for j in range(k):
                n = j // L
                s += xf[(n * M + m) * L + (j - n * L)]
            s /= k
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


# ---------------------------------------------------------------------------------------
# nlc: x (R, C), channels fastest.


@kernel
def _col_sums(x, k, r0, r1, c0, c1, out1, out2):
    """Shifted sums of rows ``r0:r1``, columns ``c0:c1`` of ``x (R, C)`` around ``k``
    (length ``c1 - c0``), stored (float64) in ``out1``/``out2``."""
    w = c1 - c0
    acc1 = np.zeros(w)
    acc2 = np.zeros(w)
    blk1 = np.empty(w, x.dtype)
    blk2 = np.empty(w, x.dtype)
    r = r0
    while r < r1:
        stop = min(r1, r + ROW_BLOCK)
        for c in range(w):
            blk1[c] = 0
            blk2[c] = 0
        rr = r
        while rr + 4 <= stop:
            shifted_sums_rows4(
                x[rr, c0:c1], x[rr + 1, c0:c1], x[rr + 2, c0:c1], x[rr + 3, c0:c1], k,
                blk1, blk2,
            )  # fmt: skip
            rr += 4
        while rr < stop:
            row = x[rr, c0:c1]
            for c in range(w):
                d = row[c] - k[c]
                blk1[c] += d
                blk2[c] += d * d
            rr += 1
        for c in range(w):
            acc1[c] += blk1[c]
            acc2[c] += blk2[c]
        r = stop
    for c in range(w):
        out1[c] = acc1[c]
        out2[c] = acc2[c]


@kernel(parallel=True)
def _nlc_sums(x, shift, bounds, cb, s1, s2):
    C = x.shape[1]
    nb = (C + cb - 1) // cb
    nr = bounds.shape[0] - 1
    for task in prange(nr * nb):
        t = task // nb
        c0 = (task - t * nb) * cb
        c1 = min(C, c0 + cb)
        _col_sums(x, shift[c0:c1], bounds[t], bounds[t + 1], c0, c1, s1[t, c0:c1], s2[t, c0:c1])


@kernel(parallel=True)
def _nlc_apply(x, y, mh, a, b, bounds, act, slope):
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            affine_act_row(x[r], y[r], mh, a, b, act, slope)


@kernel
def _col_grad_sums(g, x, m, a, b, act, slope, r0, r1, c0, c1, out1, out2):
    """``(sum dy, sum dy * (x - m))`` over rows ``r0:r1``, columns ``c0:c1`` (coefficients
    ``m``/``a``/``b`` of length ``c1 - c0``), stored (float64) in ``out1``/``out2``."""
    w = c1 - c0
    acc1 = np.zeros(w)
    acc2 = np.zeros(w)
    blk1 = np.empty(w, x.dtype)
    blk2 = np.empty(w, x.dtype)
    r = r0
    while r < r1:
        stop = min(r1, r + ROW_BLOCK)
        for c in range(w):
            blk1[c] = 0
            blk2[c] = 0
        rr = r
        if act == IDENTITY:
            while rr + 4 <= stop:
                grad_sums_rows4(
                    g[rr, c0:c1], g[rr + 1, c0:c1], g[rr + 2, c0:c1], g[rr + 3, c0:c1],
                    x[rr, c0:c1], x[rr + 1, c0:c1], x[rr + 2, c0:c1], x[rr + 3, c0:c1],
                    m, blk1, blk2,
                )  # fmt: skip
                rr += 4
        while rr < stop:
            grad_sums_row(g[rr, c0:c1], x[rr, c0:c1], m, a, b, act, slope, blk1, blk2)
            rr += 1
        for c in range(w):
            acc1[c] += blk1[c]
            acc2[c] += blk2[c]
        r = stop
    for c in range(w):
        out1[c] = acc1[c]
        out2[c] = acc2[c]


@kernel(parallel=True)
def _nlc_grad_sums(g, x, mh, a, b, bounds, cb, act, slope, s1, s2):
    C = x.shape[1]
    nb = (C + cb - 1) // cb
    nr = bounds.shape[0] - 1
    for task in prange(nr * nb):
        t = task // nb
        c0 = (task - t * nb) * cb
        c1 = min(C, c0 + cb)
        _col_grad_sums(
            g, x, mh[c0:c1], a[c0:c1], b[c0:c1], act, slope, bounds[t], bounds[t + 1], c0, c1,
            s1[t, c0:c1], s2[t, c0:c1],
        )  # fmt: skip


@kernel(parallel=True)
def _nlc_grad_apply(g, x, dx, mh, a, b, k1, k2, k3, bounds, act, slope):
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            grad_apply_row(g[r], x[r], dx[r], mh, k1, k2, k3, a, b, act, slope)


@kernel
def _col_shift(x, c0, c1):
    """Per column ``c0:c1`` of ``x (R, C)``: mean of its first <= 64 values (0 if not finite)."""
    k = min(64, x.shape[0])
    w = c1 - c0
    acc = np.zeros(w)
    for r in range(k):
        row = x[r, c0:c1]
        for c in range(w):
            acc[c] += row[c]
    shift = np.empty(w, x.dtype)
    for c in range(w):
        s = acc[c] / k
        shift[c] = s if np.isfinite(s) else 0.0
    return shift


@kernel
def _nlc_shift(x):
    return _col_shift(x, 0, x.shape[1])


@kernel
def _nlc_split(R, C, threads):
    """Row-chunk bounds, and the channel block width giving every thread a task."""
    bounds = chunk_bounds(R, C, threads, 1)
    nr = bounds.shape[0] - 1
    want = max(1, threads // nr) if R * C >= 2 * 32768 else 1
    cb = max(64, (C + want - 1) // want)
    return bounds, min(C, cb, 1024)


@kernel
def _tile(v, B):
    """``v (C,)`` repeated ``B`` times: coefficients of ``B`` consecutive rows as one row."""
    C = v.shape[0]
    out = np.empty(B * C, v.dtype)
    for b in range(B):
        for c in range(C):
            out[b * C + c] = v[c]
    return out


@kernel
def _fold_tiles(parts, C):
    """``(chunks, B * C)`` float64 partials of tiled rows -> per-channel sums ``(C,)``."""
    out = np.zeros(C)
    for t in range(parts.shape[0]):
        for j in range(parts.shape[1]):
            out[j % C] += parts[t, j]
    return out


@kernel
def _add_folded(p1, p2, C, s1, s2):
    f1 = _fold_tiles(p1, C)
    f2 = _fold_tiles(p2, C)
    for c in range(C):
        s1[c] += f1[c]
        s2[c] += f2[c]


@kernel
def _tiling(R, C, width):
    """Rows per tile ``B`` (so that a tiled row holds about ``width`` values; 1 when rows are
    already long) and the number of leading rows ``head`` the tiles cover."""
    B = max(1, width // C)
    if B == 1 or R < 2 * B:
        return 1, R
    return B, (R // B) * B


@kernel
def _nlc_sums_all(x, shift, threads, s1, s2):
    """Adds the shifted sums of ``x (R, C)`` rows into ``s1``/``s2`` ``(C,)``."""
    R, C = x.shape
    B, head = _tiling(R, C, TILE_SUMS)
    xt = x[:head].reshape(head // B, B * C)
    bounds, cb = _nlc_split(head // B, B * C, threads)
    p1 = np.zeros((bounds.shape[0] - 1, B * C))
    p2 = np.zeros((bounds.shape[0] - 1, B * C))
    _nlc_sums(xt, _tile(shift, B), bounds, cb, p1, p2)
    _add_folded(p1, p2, C, s1, s2)
    if head < R:  # the last R % B rows, untiled (not recursive: cached code cannot recurse)
        p1 = np.zeros((1, C))
        p2 = np.zeros((1, C))
        _nlc_sums(x[head:], shift, chunk_bounds(R - head, C, 1, 1), C, p1, p2)
        _add_folded(p1, p2, C, s1, s2)


@kernel
def _nlc_moments(x, threads):
    C = x.shape[1]
    shift = _nlc_shift(x)
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    _nlc_sums_all(x, shift, threads, s1, s2)
    return shift, s1, s2


@kernel
def _nlc_apply_all(x, y, mh, a, b, act, slope, threads):
    R, C = x.shape
    B, head = _tiling(R, C, TILE_ELEMENTWISE)
    rows = head // B
    bounds = chunk_bounds(rows, B * C, threads, 1)
    _nlc_apply(
        x[:head].reshape(rows, B * C), y[:head].reshape(rows, B * C), _tile(mh, B),
        _tile(a, B), _tile(b, B), bounds, act, slope,
    )  # fmt: skip
    if head < R:
        _nlc_apply(x[head:], y[head:], mh, a, b, chunk_bounds(R - head, C, 1, 1), act, slope)


@kernel
def _nlc_grad_sums_all(g, x, mh, a, b, act, slope, threads, s1, s2):
    R, C = x.shape
    B, head = _tiling(R, C, TILE_SUMS)
    rows = head // B
    bounds, cb = _nlc_split(rows, B * C, threads)
    p1 = np.zeros((bounds.shape[0] - 1, B * C))
    p2 = np.zeros((bounds.shape[0] - 1, B * C))
    _nlc_grad_sums(
        g[:head].reshape(rows, B * C), x[:head].reshape(rows, B * C), _tile(mh, B),
        _tile(a, B), _tile(b, B), bounds, cb, act, slope, p1, p2,
    )  # fmt: skip
    _add_folded(p1, p2, C, s1, s2)
    if head < R:  # the last R % B rows, untiled
        p1 = np.zeros((1, C))
        p2 = np.zeros((1, C))
        _nlc_grad_sums(
            g[head:], x[head:], mh, a, b, chunk_bounds(R - head, C, 1, 1), C, act, slope, p1, p2
        )
        _add_folded(p1, p2, C, s1, s2)


@kernel
def _nlc_grad_moments(g, x, mh, a, b, act, slope, threads):
    C = x.shape[1]
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    _nlc_grad_sums_all(g, x, mh, a, b, act, slope, threads, s1, s2)
    return s1, s2


@kernel
def _nlc_grad_apply_all(g, x, dx, mh, a, b, k1, k2, k3, act, slope, threads):
    R, C = x.shape
    B, head = _tiling(R, C, TILE_ELEMENTWISE)
    rows = head // B
    bounds = chunk_bounds(rows, B * C, threads, 1)
    _nlc_grad_apply(
        g[:head].reshape(rows, B * C), x[:head].reshape(rows, B * C),
        dx[:head].reshape(rows, B * C), _tile(mh, B), _tile(a, B), _tile(b, B),
        _tile(k1, B), _tile(k2, B), _tile(k3, B), bounds, act, slope,
    )  # fmt: skip
    if head < R:
        _nlc_grad_apply(
            g[head:], x[head:], dx[head:], mh, a, b, k1, k2, k3,
            chunk_bounds(R - head, C, 1, 1), act, slope,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Small channels-last tensors (BatchNorm1d on (256, 1024)): each thread takes a block of
# columns through all rows, statistics then normalization (or gradient sums then dx), in
# one parallel region; the block stays in the thread's L2 cache between the two sweeps and
# no partial sums cross threads.


@kernel
def _small_blocks(R, C, threads):
    """Column-block width of the fused path, or 0 when ``x (R, C)`` is not small (more
    than ``SMALL_NLC`` values per thread) or its rows are too short to split."""
    if C < 64 or R * C > SMALL_NLC * threads:
        return 0
    cb = (C + threads - 1) // threads
    return max(64, (cb + 15) // 16 * 16)


@kernel(parallel=True)
def _nlc_forward_cols(x, y, w, b, eps, act, slope, cb, mean_out, var_out):
    R, C = x.shape
    for blk in prange((C + cb - 1) // cb):
        c0 = blk * cb
        c1 = min(C, c0 + cb)
        shift = _col_shift(x, c0, c1)
        s1 = np.empty(c1 - c0)
        s2 = np.empty(c1 - c0)
        _col_sums(x, shift, 0, R, c0, c1, s1, s2)
        mean, var = finish_stats(shift, s1, s2, R, mean_out[c0:c1], var_out[c0:c1])
        mh, a, bb, _ = affine_coeffs(mean, invstd_of(var, eps), w[c0:c1], b[c0:c1], x)
        for r in range(R):
            affine_act_row(x[r, c0:c1], y[r, c0:c1], mh, a, bb, act, slope)


@kernel(parallel=True)
def _nlc_backward_cols(g, x, dx, w, mean, var, eps, cb, dw_out, db_out):
    R, C = x.shape
    zero = x.dtype.type(0)
    no_bias = np.empty(0, x.dtype)
    for blk in prange((C + cb - 1) // cb):
        c0 = blk * cb
        c1 = min(C, c0 + cb)
        wb = w[c0:c1]
        inv = invstd_of(var[c0:c1].astype(np.float64), eps)
        mh, a, bb, lo = affine_coeffs(mean[c0:c1].astype(np.float64), inv, wb, no_bias, x)
        s1 = np.empty(c1 - c0)
        s2 = np.empty(c1 - c0)
        _col_grad_sums(g, x, mh, a, bb, IDENTITY, zero, 0, R, c0, c1, s1, s2)
        dy_xhat = _dy_xhat(s1, s2, lo, inv)
        k1, k2, k3 = grad_coeffs(inv, wb, s1, dy_xhat, R, lo, x)
        for r in range(R):
            grad_apply_row(
                g[r, c0:c1], x[r, c0:c1], dx[r, c0:c1], mh, k1, k2, k3, a, bb, IDENTITY, zero
            )
        _store(dy_xhat, dw_out[c0:c1])
        _store(s1, db_out[c0:c1])


@kernel
def _nlc_forward_small(x, y, w, b, eps, act, slope, mean_out, var_out, threads):
    cb = _small_blocks(x.shape[0], x.shape[1], threads)
    if cb == 0:
        return False
    _nlc_forward_cols(x, y, w, b, eps, act, slope, cb, mean_out, var_out)
    return True


@kernel
def _nlc_backward_small(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):
    cb = _small_blocks(x.shape[0], x.shape[1], threads)
    if cb == 0:
        return False
    _nlc_backward_cols(g, x, dx, w, mean, var, eps, cb, dw_out, db_out)
    return True


@kernel
def _no_forward_small(x, y, w, b, eps, act, slope, mean_out, var_out, threads):
    return False


@kernel
def _no_backward_small(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):
    return False


# ---------------------------------------------------------------------------------------
# Layout stubs: resolved at compile time by the rank of x (3: ncl, 2: nlc).


def moments(x, threads):  # pragma: no cover - compile-time stub
    """``(shift (M,), S1 (M,), S2 (M,))``: shifted sums per channel."""
    raise NotImplementedError


def apply(x, y, mh, a, b, act, slope, threads):  # pragma: no cover - compile-time stub
    """``y = act((x - mh) * a + b)`` per channel."""
    raise NotImplementedError


def grad_moments(g, x, mh, a, b, act, slope, threads):  # pragma: no cover - compile-time stub
    """``(sum dy, sum dy * (x - mh))`` per channel."""
    raise NotImplementedError


def grad_apply_all(g, x, dx, mh, a, b, k1, k2, k3, act, slope, threads):  # pragma: no cover
    """``dx = k1 * dy - k2 * (x - mh) - k3`` per channel."""
    raise NotImplementedError


def forward_small(x, y, w, b, eps, act, slope, mean_out, var_out, threads):  # pragma: no cover
    """The fused training forward for small channels-last ``x``; False if not applicable."""
    raise NotImplementedError


def backward_small(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):  # pragma: no cover
    """The fused training backward for small channels-last ``x``; False if not applicable."""
    raise NotImplementedError


@overload(forward_small)
def _forward_small_impl(x, y, w, b, eps, act, slope, mean_out, var_out, threads):
    return _no_forward_small.py_func if x.ndim == 3 else _nlc_forward_small.py_func


@overload(backward_small)
def _backward_small_impl(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):
    return _no_backward_small.py_func if x.ndim == 3 else _nlc_backward_small.py_func


@overload(moments)
def _moments_impl(x, threads):
    return _ncl_moments.py_func if x.ndim == 3 else _nlc_moments.py_func


@overload(apply)
def _apply_impl(x, y, mh, a, b, act, slope, threads):
    return _ncl_apply_all.py_func if x.ndim == 3 else _nlc_apply_all.py_func


@overload(grad_moments)
def _grad_moments_impl(g, x, mh, a, b, act, slope, threads):
    return _ncl_grad_moments.py_func if x.ndim == 3 else _nlc_grad_moments.py_func


@overload(grad_apply_all)
def _grad_apply_impl(g, x, dx, mh, a, b, k1, k2, k3, act, slope, threads):
    return _ncl_grad_apply_all.py_func if x.ndim == 3 else _nlc_grad_apply_all.py_func


# ---------------------------------------------------------------------------------------
# Per-channel coefficient math (serial, float64).


@kernel
def finish_stats(shift, s1, s2, count, mean_out, var_out):
    """Shifted sums -> mean and biased variance (float64, also stored in ``*_out``)."""
    M = shift.shape[0]
    mean = np.empty(M)
    var = np.empty(M)
    for m in range(M):
        d = s1[m] / count
        v = s2[m] / count - d * d
        if v < 0.0:
            v = 0.0
        mean[m] = shift[m] + d
        var[m] = v
        mean_out[m] = mean[m]
        var_out[m] = v
    return mean, var


@kernel
def invstd_of(var, eps):
    out = np.empty(var.shape[0])
    for m in range(var.shape[0]):
        out[m] = 1.0 / np.sqrt(var[m] + eps)
    return out


@kernel
def affine_coeffs(mean, invstd, w, b, like):
    """``(mh, a, b', lo)`` with ``pre = (x - mh) * a + b'`` equal to the affine output.

    ``mh`` is the mean rounded to the data type and ``lo = mean - mh`` its residue, folded
    into ``b' = b - lo * a``. ``w``/``b`` of length 0 mean "no weight"/"no bias".
    """
    M = mean.shape[0]
    mh = np.empty(M, like.dtype)
    a = np.empty(M, like.dtype)
    bb = np.empty(M, like.dtype)
    lo = np.empty(M)
    for m in range(M):
        am = invstd[m] * (w[m] if w.shape[0] > 0 else 1.0)
        mh[m] = mean[m]
        lo[m] = mean[m] - mh[m]
        bb[m] = (b[m] if b.shape[0] > 0 else 0.0) - lo[m] * am
        a[m] = am
    return mh, a, bb, lo


@kernel
def grad_coeffs(invstd, w, sum_dy, sum_dy_xhat, count, lo, like):
    """``(k1, k2, k3)`` of ``dx = k1 * dy - k2 * (x - mh) - k3``; sums of length 0: constants."""
    M = invstd.shape[0]
    k1 = np.empty(M, like.dtype)
    k2 = np.empty(M, like.dtype)
    k3 = np.empty(M, like.dtype)
    for m in range(M):
        scale = invstd[m] * (w[m] if w.shape[0] > 0 else 1.0)
        k1[m] = scale
        if sum_dy.shape[0] > 0:
            c2 = scale * invstd[m] * sum_dy_xhat[m] / count
            k2[m] = c2
            k3[m] = scale * sum_dy[m] / count - c2 * lo[m]
        else:
            k2[m] = 0.0
            k3[m] = 0.0
    return k1, k2, k3


@kernel
def _store(src, dst):
    for m in range(src.shape[0]):
        dst[m] = src[m]


@kernel
def _dy_xhat(s1, s2, lo, invstd):
    """``sum dy * (x - mean) * invstd`` from sums taken around ``mh = mean - lo``."""
    out = np.empty(s1.shape[0])
    for m in range(s1.shape[0]):
        out[m] = (s2[m] - lo[m] * s1[m]) * invstd[m]
    return out


# ---------------------------------------------------------------------------------------
# Drivers (entry points). Vectors are the data type; length 0 stands for "absent".

_X = {"ncl": "{t}[:, :, ::1]", "nlc": "{t}[:, ::1]"}
_V = "{t}[::1]"


def _sig(template: str) -> dict[str, str]:
    return {layout: template.replace("X", x) for layout, x in _X.items()}


@entry(**_sig(f"void(X, {_V}, {_V}, int64)"))
def bn_stats(x, mean_out, var_out, threads):
    """Per-channel mean and biased variance of ``x``."""
    shift, s1, s2 = moments(x, threads)
    finish_stats(shift, s1, s2, x.size // mean_out.shape[0], mean_out, var_out)


@entry(**_sig(f"void(X, X, {_V}, {_V}, {_V}, {_V}, int64, float64, int64)"))
def bn_elemt(x, y, mean, invstd, w, b, act, slope, threads):
    """``y = act((x - mean) * invstd * w + b)``."""
    mh, a, bb, _ = affine_coeffs(mean.astype(np.float64), invstd.astype(np.float64), w, b, x)
    apply(x, y, mh, a, bb, act, x.dtype.type(slope), threads)


@entry(**_sig(f"void(X, X, {_V}, {_V}, {_V}, {_V}, int64, float64, {_V}, {_V}, int64)"))
def bn_backward_reduce(g, x, mean, invstd, w, b, act, slope, sum_dy, sum_dy_xhat, threads):
    """``sum(dy)`` and ``sum(dy * x_hat)`` per channel, ``dy = g * act'(pre)``."""
    inv = invstd.astype(np.float64)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, b, x)
    s1, s2 = grad_moments(g, x, mh, a, bb, act, x.dtype.type(slope), threads)
    _store(s1, sum_dy)
    _store(_dy_xhat(s1, s2, lo, inv), sum_dy_xhat)


@entry(**_sig(f"void(X, X, X, {_V}, {_V}, {_V}, {_V}, {_V}, {_V}, int64, int64, float64, int64)"))
def bn_backward_elemt(
    g, x, dx, mean, invstd, w, b, sum_dy, sum_dy_xhat, count, act, slope, threads
):
    """``dx = w * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)`` (sums of length 0:
    statistics are constants, ``dx = dy * w * invstd``)."""
    inv = invstd.astype(np.float64)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, b, x)
    k1, k2, k3 = grad_coeffs(
        inv, w, sum_dy.astype(np.float64), sum_dy_xhat.astype(np.float64), count, lo, x
    )
    grad_apply_all(g, x, dx, mh, a, bb, k1, k2, k3, act, x.dtype.type(slope), threads)


@entry(**_sig(f"void(X, X, {_V}, {_V}, float64, int64, float64, {_V}, {_V}, int64)"))
def bn_forward(x, y, w, b, eps, act, slope, mean_out, var_out, threads):
    """Training forward: statistics, then ``y = act(x_hat * w + b)``."""
    if forward_small(x, y, w, b, eps, act, x.dtype.type(slope), mean_out, var_out, threads):
        return
    shift, s1, s2 = moments(x, threads)
    mean, var = finish_stats(shift, s1, s2, x.size // mean_out.shape[0], mean_out, var_out)
    mh, a, bb, _ = affine_coeffs(mean, invstd_of(var, eps), w, b, x)
    apply(x, y, mh, a, bb, act, x.dtype.type(slope), threads)


@entry(**_sig(f"void(X, X, X, {_V}, {_V}, {_V}, float64, {_V}, {_V}, int64)"))
def bn_backward(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):
    """Training backward: ``dx``, ``dweight = sum(g * x_hat)``, ``dbias = sum(g)``."""
    if backward_small(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):
        return
    inv = invstd_of(var.astype(np.float64), eps)
    no_bias = np.empty(0, x.dtype)
    zero = x.dtype.type(0)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, no_bias, x)
    s1, s2 = grad_moments(g, x, mh, a, bb, IDENTITY, zero, threads)
    dy_xhat = _dy_xhat(s1, s2, lo, inv)
    k1, k2, k3 = grad_coeffs(inv, w, s1, dy_xhat, x.size // mean.shape[0], lo, x)
    grad_apply_all(g, x, dx, mh, a, bb, k1, k2, k3, IDENTITY, zero, threads)
    _store(dy_xhat, dw_out)
    _store(s1, db_out)


@entry(**_sig(f"void(X, X, {_V}, {_V}, {_V}, {_V}, float64, int64)"))
def bn_eval_forward(x, y, running_mean, running_var, w, b, eps, threads):
    """Inference forward with fixed statistics."""
    inv = invstd_of(running_var.astype(np.float64), eps)
    mh, a, bb, _ = affine_coeffs(running_mean.astype(np.float64), inv, w, b, x)
    apply(x, y, mh, a, bb, IDENTITY, x.dtype.type(0), threads)


@entry(**_sig(f"void(X, X, X, {_V}, {_V}, {_V}, float64, {_V}, {_V}, int64)"))
def bn_eval_backward(g, x, dx, running_mean, running_var, w, eps, dw_out, db_out, threads):
    """Inference backward: ``dx = g * w * invstd`` (one read of g), parameter sums."""
    inv = invstd_of(running_var.astype(np.float64), eps)
    no_bias = np.empty(0, x.dtype)
    zero = x.dtype.type(0)
    mh, a, bb, lo = affine_coeffs(running_mean.astype(np.float64), inv, w, no_bias, x)
    s1, s2 = grad_moments(g, x, mh, a, bb, IDENTITY, zero, threads)
    _store(_dy_xhat(s1, s2, lo, inv), dw_out)
    _store(s1, db_out)
    k1, _, _ = grad_coeffs(inv, w, np.empty(0), np.empty(0), 1, lo, x)
    zeros = np.zeros(k1.shape[0], x.dtype)
    apply(g, dx, zeros, k1, zeros, IDENTITY, zero, threads)
