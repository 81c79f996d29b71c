"""Row normalization kernels: LayerNorm (``center=True``) and RMSNorm (``center=False``).

``x (R, D)`` C-contiguous; statistics per row, affine per column. Rows are split into one
contiguous chunk per thread; a row is read from memory once and revisited from L1.

Forward, per row (exact two passes, float64 sums)::

    mean = sum(x) / D;  var = sum((x - mean)**2) / D        (center)
    mean = 0;           var = sum(x**2) / D                 (RMS: the mean square)
    y = (x - mean) * rstd * w + b,   rstd = 1 / sqrt(var + eps)

Backward, per row with ``gw = g * w`` and ``x_hat = (x - mean) * rstd``::

    dx = rstd * (gw - mean(gw) - x_hat * mean(gw * x_hat))     (center; exactly 0 for D = 1)
    dx = rstd * (gw - x_hat * mean(gw * x_hat))                (RMS)

and per column ``dw = sum_r g * x_hat``, ``db = sum_r g`` from per-thread partials (float32
partials over ``ROW_BLOCK`` rows, flushed to float64).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from normkit.kernels._common import ROW_BLOCK, chunk_bounds
from normkit.kernels._jit import entry, kernel


@kernel
def _row_stats(row, center):
    """``(mh, lo, var)``: mean split as ``mh + lo`` (``mh`` in the data type), variance."""
    n = row.shape[0]
    if center:
        s = 0.0
        for i in range(n):
            s += row[i]
        mh = row.dtype.type(s / n)
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            d = row[i] - mh
            s1 += d
            s2 += d * d
        lo = s1 / n
        var = s2 / n - lo * lo
        if var < 0.0:
            var = 0.0
        return mh, lo, var
    s2 = 0.0
    for i in range(n):
        s2 += row[i] * row[i]
    return row.dtype.type(0), 0.0, s2 / n


@kernel(parallel=True)
def _rows_forward(x, y, w, b, eps, center, bounds, mean_out, var_out):
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            row = x[r]
            out = y[r]
            mh, lo, var = _row_stats(row, center)
            rstd = 1.0 / np.sqrt(var + eps)
            mean_out[r] = mh + lo
            var_out[r] = var
            rs = row.dtype.type(rstd)
            c = row.dtype.type(-lo * rstd)
            for i in range(row.shape[0]):
                out[i] = ((row[i] - mh) * rs + c) * w[i] + b[i]


@kernel(parallel=True)
def _rows_backward(g, x, dx, w, mean, var, eps, center, bounds, dw_parts, db_parts):
    D = x.shape[1]
    # LayerNorm over one value outputs b whatever x is: dx is exactly 0. The formula would
    # leave g * w - mean(g * w), the product rounded once and not (contracted to an FMA).
    live = 0.0 if center and D == 1 else 1.0
    for t in prange(bounds.shape[0] - 1):
        blk_w = np.empty(D, x.dtype)
        blk_b = np.empty(D, x.dtype)
        acc_w = np.zeros(D)
        acc_b = np.zeros(D)
        r = bounds[t]
        hi = bounds[t + 1]
        while r < hi:
            stop = min(hi, r + ROW_BLOCK)
            for i in range(D):
                blk_w[i] = 0
                blk_b[i] = 0
            for rr in range(r, stop):
                gr = g[rr]
                xr = x[rr]
                dxr = dx[rr]
                rstd = 1.0 / np.sqrt(var[rr] + eps)
                rs = x.dtype.type(rstd)
                rd = x.dtype.type(live * rstd)
                m = mean[rr]
                sa = 0.0
                sb = 0.0
                sd = 0.0
                for i in range(D):
                    d = xr[i] - m
                    gw = gr[i] * w[i]
                    sa += gw
                    sb += gw * (d * rs)
                    sd += d
                # The saved mean is rounded to the data type (float32 loses the residue the
                # forward kept, R3); mean(x - m) restores it: x - m is exact for x near m,
                # so x_hat = (x - m) * rstd - lo * rstd keeps float32 accuracy at large means.
                lr = sd / D * rstd if center else 0.0
                sb -= lr * sa
                lrs = x.dtype.type(lr)
                ca = x.dtype.type(sa / D) if center else x.dtype.type(0)
                cb = x.dtype.type(sb / D)
                for i in range(D):
                    xh = (xr[i] - m) * rs - lrs
                    blk_w[i] += gr[i] * xh
                    blk_b[i] += gr[i]
                    dxr[i] = rd * (gr[i] * w[i] - ca - xh * cb)
            for i in range(D):
                acc_w[i] += blk_w[i]
                acc_b[i] += blk_b[i]
            r = stop
        for i in range(D):
            dw_parts[t, i] = acc_w[i]
            db_parts[t, i] = acc_b[i]


@kernel
def _or_const(v, n, value, like):
    """``v`` itself, or a constant vector of length ``n`` when ``v`` is empty (absent)."""
    if v.shape[0] > 0:
        return v
    return np.full(n, value, like.dtype)


_SIG = "{t}[:, ::1]"
_V = "{t}[::1]"


@entry(rows=f"void({_SIG}, {_SIG}, {_V}, {_V}, float64, boolean, {_V}, {_V}, int64)")
def row_forward(x, y, w, b, eps, center, mean_out, var_out, threads):
    """LayerNorm/RMSNorm forward; ``w``/``b`` of length 0 mean absent."""
    R, D = x.shape
    bounds = chunk_bounds(R, D, threads, 1)
    ww = _or_const(w, D, 1.0, x)
    bb = _or_const(b, D, 0.0, x)
    _rows_forward(x, y, ww, bb, eps, center, bounds, mean_out, var_out)


@entry(rows=f"void({_SIG}, {_SIG}, {_SIG}, {_V}, {_V}, {_V}, float64, boolean, {_V}, {_V}, int64)")
def row_backward(g, x, dx, w, mean, var, eps, center, dw_out, db_out, threads):
    """LayerNorm/RMSNorm backward: ``dx``, ``dw = sum(g * x_hat)``, ``db = sum(g)``."""
    R, D = x.shape
    bounds = chunk_bounds(R, D, threads, 1)
    ww = _or_const(w, D, 1.0, x)
    chunks = bounds.shape[0] - 1
    dw_parts = np.empty((chunks, D))
    db_parts = np.empty((chunks, D))
    _rows_backward(g, x, dx, ww, mean, var, eps, center, bounds, dw_parts, db_parts)
    for i in range(D):
        sw = 0.0
        sb = 0.0
        for t in range(chunks):
            sw += dw_parts[t, i]
            sb += db_parts[t, i]
        dw_out[i] = sw
        db_out[i] = sb
