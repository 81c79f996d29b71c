"""Batch-norm passes over ``x (R, C)`` rows with channels fastest (channels_last,
BatchNorm1d on (N, C)): the parallel sweeps behind the ``nlc`` layout of
:mod:`normkit.kernels.batch_norm`.

Rows are cut into chunks (and channels into blocks when rows are few); loops are vectorized
along ``C`` with float32 partials flushed to float64 every ``ROW_BLOCK`` rows. Small tensors
(at most ``SMALL_NLC`` values per thread) take statistics and normalization per column block
in one parallel region.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from normkit.kernels._common import (
    IDENTITY,
    ROW_BLOCK,
    affine_act_row,
    chunk_bounds,
    grad_apply_row,
    grad_sums_row,
    grad_sums_rows4,
    shifted_sums_rows4,
)
from normkit.kernels._jit import kernel
from normkit.kernels.batch_norm_coeffs import (
    _dy_xhat,
    _store,
    affine_coeffs,
    finish_stats,
    grad_coeffs,
    invstd_of,
)

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
