"""Channels-first layer normalization (``LayerNorm2d``): statistics over the channels at each
position of ``x (N, C, L)`` C-contiguous, without transposing it.

At a position ``(n, l)`` the ``C`` values are ``L`` apart in memory, so the kernels work on
blocks of ``COLUMNS`` consecutive positions: for each channel the block is one contiguous
run, and every loop runs along positions (vectorized), accumulating per-position sums in
float64. A block (``C x COLUMNS`` values) stays in cache through the passes, so ``x`` is read
from memory once per kernel. Per position, with ``m = C`` values::

    mean = sum_c x / C;  var = sum_c (x - mean)**2 / C;  rstd = 1 / sqrt(var + eps)
    y = (x - mean) * rstd * w[c] + b[c]

Backward, with ``gw = g * w[c]`` and ``x_hat = (x - mean) * rstd``::

    dx = rstd * (gw - sum_c(gw) / C - x_hat * sum_c(gw * x_hat) / C)
    dw[c] = sum_{n, l} g * x_hat;  db[c] = sum_{n, l} g     (per-task partials, then summed)

In the forward's elementwise pass the mean is split as ``mh + lo`` (``mh`` in the data
type), so a large mean costs no accuracy: ``y = ((x - mh) - lo) * (rstd * w) + b``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from normkit.kernels._jit import entry, kernel

COLUMNS = 256  # positions per task: C * 256 values stay in L2 for C up to ~1000 (float32)


@kernel
def _block_stats(x, n, l0, l1):
    """``(mean, var)`` in float64 for positions ``l0:l1`` of sample ``n`` (two passes)."""
    C = x.shape[1]
    width = l1 - l0
    s = np.zeros(width)
    for c in range(C):
        row = x[n, c, l0:l1]
        for i in range(width):
            s[i] += row[i]
    mean = np.empty(width)
    for i in range(width):
        mean[i] = s[i] / C
    q = np.zeros(width)
    for c in range(C):
        row = x[n, c, l0:l1]
        for i in range(width):
            d = row[i] - mean[i]
            q[i] += d * d
    var = np.empty(width)
    for i in range(width):
        var[i] = q[i] / C
    return mean, var


@kernel(parallel=True)
def _forward_blocks(x, y, w, b, eps, mean_out, var_out):
    N, C, L = x.shape
    blocks = (L + COLUMNS - 1) // COLUMNS
    t = x.dtype.type
    for task in prange(N * blocks):
        n = task // blocks
        l0 = (task % blocks) * COLUMNS
        l1 = min(L, l0 + COLUMNS)
        width = l1 - l0
        mean, var = _block_stats(x, n, l0, l1)
        mh = np.empty(width, x.dtype)
        lo = np.empty(width, x.dtype)
        a = np.empty(width, x.dtype)
        for i in range(width):
            mh[i] = t(mean[i])
            lo[i] = t(mean[i] - mh[i])
            a[i] = t(1.0 / np.sqrt(var[i] + eps))
            mean_out[n * L + l0 + i] = mean[i]
            var_out[n * L + l0 + i] = var[i]
        for c in range(C):
            wc = w[c]
            bc = b[c]
            src = x[n, c, l0:l1]
            dst = y[n, c, l0:l1]
            for i in range(width):
                dst[i] = ((src[i] - mh[i]) - lo[i]) * (a[i] * wc) + bc


@kernel(parallel=True)
def _backward_blocks(g, x, dx, w, mean_in, var_in, eps, dw_parts, db_parts):
    N, C, L = x.shape
    blocks = (L + COLUMNS - 1) // COLUMNS
    t = x.dtype.type
    # One channel: y = b whatever x is, so dx is exactly 0 (the formula would leave
    # g * w - mean(g * w) with the product rounded once and not, contracted to an FMA).
    live = 0.0 if C == 1 else 1.0
    for task in prange(N * blocks):
        n = task // blocks
        l0 = (task % blocks) * COLUMNS
        l1 = min(L, l0 + COLUMNS)
        width = l1 - l0
        mean = np.empty(width)
        rstd = np.empty(width)
        for i in range(width):
            mean[i] = mean_in[n * L + l0 + i]
            rstd[i] = 1.0 / np.sqrt(var_in[n * L + l0 + i] + eps)
        sum_gw = np.zeros(width)
        sum_gw_xhat = np.zeros(width)
        for c in range(C):
            wc = w[c]
            gr = g[n, c, l0:l1]
            xr = x[n, c, l0:l1]
            sw = 0.0
            sb = 0.0
            for i in range(width):
                xhat = (xr[i] - mean[i]) * rstd[i]
                gw = gr[i] * wc
                sum_gw[i] += gw
                sum_gw_xhat[i] += gw * xhat
                sw += gr[i] * xhat
                sb += gr[i]
            dw_parts[task, c] = sw
            db_parts[task, c] = sb
        k1 = np.empty(width)
        k2 = np.empty(width)
        for i in range(width):
            k1[i] = sum_gw[i] / C
            k2[i] = sum_gw_xhat[i] / C
        for c in range(C):
            wc = w[c]
            gr = g[n, c, l0:l1]
            xr = x[n, c, l0:l1]
            out = dx[n, c, l0:l1]
            for i in range(width):
                xhat = (xr[i] - mean[i]) * rstd[i]
                out[i] = t(live * rstd[i] * (gr[i] * wc - k1[i] - xhat * k2[i]))


@kernel
def _or_const(v, n, value, like):
    if v.shape[0] > 0:
        return v
    return np.full(n, value, like.dtype)


_X = "{t}[:, :, ::1]"
_V = "{t}[::1]"


@entry(ncl=f"void({_X}, {_X}, {_V}, {_V}, float64, {_V}, {_V}, int64)")
def cn_forward(x, y, w, b, eps, mean_out, var_out, threads):
    """Channels-first LayerNorm forward; ``mean_out``/``var_out`` are ``(N * L,)``; ``w``/``b``
    of length 0 mean absent. (``threads`` is accepted for the common signature: the tasks
    are spread over Numba's threads, whose count the caller sets.)"""
    C = x.shape[1]
    _forward_blocks(x, y, _or_const(w, C, 1.0, x), _or_const(b, C, 0.0, x), eps, mean_out, var_out)


@entry(ncl=f"void({_X}, {_X}, {_X}, {_V}, {_V}, {_V}, float64, {_V}, {_V}, int64)")
def cn_backward(g, x, dx, w, mean, var, eps, dw_out, db_out, threads):
    """Channels-first LayerNorm backward: ``dx``, ``dw = sum(g * x_hat)``, ``db = sum(g)``."""
    N, C, L = x.shape
    tasks = N * ((L + COLUMNS - 1) // COLUMNS)
    dw_parts = np.empty((tasks, C))
    db_parts = np.empty((tasks, C))
    _backward_blocks(g, x, dx, _or_const(w, C, 1.0, x), mean, var, eps, dw_parts, db_parts)
    for c in range(C):
        sw = 0.0
        sb = 0.0
        for task in range(tasks):
            sw += dw_parts[task, c]
            sb += db_parts[task, c]
        dw_out[c] = sw
        db_out[c] = sb
