"""Batch normalization fused with a residual add and an activation, the end of a ResNet
block: ``y = act(BN(x) + r)`` and its backward, in the ``ncl`` and ``nlc`` layouts of
:mod:`normkit.kernels.batch_norm` (whose statistics pass and coefficient helpers it reuses).

Forward: the statistics of ``x`` (one read), then one elementwise pass reading ``x`` and
``r``::

    y = act((x - m) * a + b + r)        # (x - m) * a + b is BatchNorm's output (affine_coeffs)

``act`` is IDENTITY or RELU. Backward of the ReLU form, from the saved output ``y``
(``y > 0`` exactly where the pre-activation is), with ``n`` values per channel::

    dz = g * [y > 0]                    # the residual's gradient (written out)
    sum_dy = sum(dz);  sum_dy_xhat = sum(dz * (x - mean)) * invstd    # in the same pass
    dx = k1 * dz - k2 * (x - m) - k3    # BatchNorm's backward of dz (batch statistics)
    dx = k1 * dz                        # fixed statistics (evaluation)

(the identity form's backward is BatchNorm's own of ``g``, with ``dr = g``: no kernel here).
"""

from __future__ import annotations

import numpy as np
from numba import prange
from numba.extending import overload

from normkit.kernels._common import BLOCK, IDENTITY, RELU, ROW_BLOCK, chunk_bounds
from normkit.kernels._jit import entry, kernel
from normkit.kernels.batch_norm import apply, grad_apply_all, moments
from normkit.kernels.batch_norm_coeffs import (
    _dy_xhat,
    _store,
    affine_coeffs,
    finish_stats,
    grad_coeffs,
    invstd_of,
)
from normkit.kernels.batch_norm_ncl import (
    SHORT_PLANE,
    SHORT_PLANE_APPLY,
    _expand,
    _fold,
    _sum_rows,
)
from normkit.kernels.batch_norm_nlc import (
    TILE_ELEMENTWISE,
    TILE_SUMS,
    _add_folded,
    _nlc_split,
    _tile,
    _tiling,
)

# ---------------------------------------------------------------------------------------
# Loops over one contiguous segment (scalar coefficients) or one row (vector coefficients).


@kernel(inline=True)
def add_act(src, res, dst, m, a, b, act):
    """``dst = act((src - m) * a + b + res)``."""
    z = src.dtype.type(0)
    n = src.shape[0]
    if act == RELU:
        for i in range(n):
            v = (src[i] - m) * a + b + res[i]
            dst[i] = z if v <= z else v
    else:
        for i in range(n):
            dst[i] = (src[i] - m) * a + b + res[i]


@kernel
def add_act_row(src, res, dst, m, a, b, act):
    """``dst[c] = act((src[c] - m[c]) * a[c] + b[c] + res[c])``."""
    z = src.dtype.type(0)
    n = src.shape[0]
    if act == RELU:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i] + res[i]
            dst[i] = z if v <= z else v
    else:
        for i in range(n):
            dst[i] = (src[i] - m[i]) * a[i] + b[i] + res[i]


@kernel(inline=True)
def relu_grad_sums(g, y, x, dz, m):
    """``dz = g * [y > 0]``; returns ``(sum dz, sum dz * (x - m))`` in float64 (partials in
    the data type over blocks of at most ``BLOCK`` values)."""
    z = x.dtype.type(0)
    s1 = 0.0
    s2 = 0.0
    start = 0
    n = x.shape[0]
    while start < n:
        stop = min(n, start + BLOCK)
        gb = g[start:stop]
        yb = y[start:stop]
        xb = x[start:stop]
        db = dz[start:stop]
        a1 = z
        a2 = z
        for i in range(xb.shape[0]):
            d = gb[i] if yb[i] > z else z
            db[i] = d
            a1 += d
            a2 += d * (xb[i] - m)
        s1 += a1
        s2 += a2
        start = stop
    return s1, s2


@kernel
def relu_grad_row(g, y, x, dz, m, acc1, acc2):
    """``dz[c] = g[c] * [y[c] > 0]``; ``acc1[c] += dz[c]``, ``acc2[c] += dz[c] * (x[c] - m[c])``."""
    z = x.dtype.type(0)
    for i in range(x.shape[0]):
        d = g[i] if y[i] > z else z
        dz[i] = d
        acc1[i] += d
        acc2[i] += d * (x[i] - m[i])


@kernel
def _col_relu_grad_sums(g, y, x, dz, m, r0, r1, c0, c1, out1, out2):
    """:func:`relu_grad_row` over rows ``r0:r1``, columns ``c0:c1`` (``m`` of length
    ``c1 - c0``), partials flushed to float64 every ``ROW_BLOCK`` rows, stored in ``out*``."""
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
        for rr in range(r, stop):
            relu_grad_row(g[rr, c0:c1], y[rr, c0:c1], x[rr, c0:c1], dz[rr, c0:c1], m, blk1, blk2)
        for c in range(w):
            acc1[c] += blk1[c]
            acc2[c] += blk2[c]
        r = stop
    for c in range(w):
        out1[c] = acc1[c]
        out2[c] = acc2[c]


# ---------------------------------------------------------------------------------------
# Parallel sweeps: ncl (flat planes, one chunk per thread) and nlc (rows x column blocks).


@kernel(parallel=True)
def _ncl_add_apply(xf, rf, yf, L, M, mh, a, b, bounds, act):
    for t in prange(bounds.shape[0] - 1):
        p = bounds[t]
        hi = bounds[t + 1]
        while p < hi:
            plane = p // L
            end = min(hi, (plane + 1) * L)
            m = plane % M
            add_act(xf[p:end], rf[p:end], yf[p:end], mh[m], a[m], b[m], act)
            p = end


@kernel(parallel=True)
def _nlc_add_apply(x, r, y, mh, a, b, bounds, act):
    for t in prange(bounds.shape[0] - 1):
        for row in range(bounds[t], bounds[t + 1]):
            add_act_row(x[row], r[row], y[row], mh, a, b, act)


@kernel(parallel=True)
def _ncl_relu_grad_sums(gf, yf, xf, dzf, L, M, mh, bounds, s1, s2):
    for t in prange(bounds.shape[0] - 1):
        p = bounds[t]
        hi = bounds[t + 1]
        while p < hi:
            plane = p // L
            end = min(hi, (plane + 1) * L)
            m = plane % M
            u, v = relu_grad_sums(gf[p:end], yf[p:end], xf[p:end], dzf[p:end], mh[m])
            s1[t, m] += u
            s2[t, m] += v
            p = end


@kernel(parallel=True)
def _nlc_relu_grad_sums(g, y, x, dz, mh, bounds, cb, s1, s2):
    C = x.shape[1]
    nb = (C + cb - 1) // cb
    nr = bounds.shape[0] - 1
    for task in prange(nr * nb):
        t = task // nb
        c0 = (task - t * nb) * cb
        c1 = min(C, c0 + cb)
        _col_relu_grad_sums(
            g, y, x, dz, mh[c0:c1], bounds[t], bounds[t + 1], c0, c1, s1[t, c0:c1], s2[t, c0:c1]
        )


# ---------------------------------------------------------------------------------------
# Per layout: planes shorter than SHORT_PLANE(_APPLY) run as rows of C * L values with
# per-position coefficients, channels-last rows shorter than the tile width several at a
# time (the same choices as batch_norm_ncl / batch_norm_nlc).


@kernel
def _ncl_add_apply_all(x, r, y, mh, a, b, act, threads):
    N, M, L = x.shape
    if L < SHORT_PLANE_APPLY:
        bounds = chunk_bounds(N, M * L, threads, 1)
        _nlc_add_apply(
            x.reshape(N, M * L), r.reshape(N, M * L), y.reshape(N, M * L), _expand(mh, L),
            _expand(a, L), _expand(b, L), bounds, act,
        )  # fmt: skip
        return
    bounds = chunk_bounds(N * M * L, 1, threads, 16)
    _ncl_add_apply(x.reshape(-1), r.reshape(-1), y.reshape(-1), L, M, mh, a, b, bounds, act)


@kernel
def _nlc_add_apply_all(x, r, y, mh, a, b, act, threads):
    R, C = x.shape
    B, head = _tiling(R, C, TILE_ELEMENTWISE)
    rows = head // B
    bounds = chunk_bounds(rows, B * C, threads, 1)
    _nlc_add_apply(
        x[:head].reshape(rows, B * C), r[:head].reshape(rows, B * C),
        y[:head].reshape(rows, B * C), _tile(mh, B), _tile(a, B), _tile(b, B), bounds, act,
    )  # fmt: skip
    if head < R:
        _nlc_add_apply(x[head:], r[head:], y[head:], mh, a, b, chunk_bounds(R - head, C, 1, 1), act)


@kernel
def _ncl_relu_grad_moments(g, y, x, dz, mh, threads):
    N, M, L = x.shape
    if L < SHORT_PLANE:
        bounds, cb = _nlc_split(N, M * L, threads)
        s1 = np.zeros((bounds.shape[0] - 1, M * L))
        s2 = np.zeros((bounds.shape[0] - 1, M * L))
        _nlc_relu_grad_sums(
            g.reshape(N, M * L), y.reshape(N, M * L), x.reshape(N, M * L),
            dz.reshape(N, M * L), _expand(mh, L), bounds, cb, s1, s2,
        )  # fmt: skip
        return _fold(s1, L), _fold(s2, L)
    bounds = chunk_bounds(N * M * L, 1, threads, 16)
    s1 = np.zeros((bounds.shape[0] - 1, M))
    s2 = np.zeros((bounds.shape[0] - 1, M))
    _ncl_relu_grad_sums(
        g.reshape(-1), y.reshape(-1), x.reshape(-1), dz.reshape(-1), L, M, mh, bounds, s1, s2
    )
    return _sum_rows(s1), _sum_rows(s2)


@kernel
def _nlc_relu_grad_moments(g, y, x, dz, mh, threads):
    R, C = x.shape
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    B, head = _tiling(R, C, TILE_SUMS)
    rows = head // B
    bounds, cb = _nlc_split(rows, B * C, threads)
    p1 = np.zeros((bounds.shape[0] - 1, B * C))
    p2 = np.zeros((bounds.shape[0] - 1, B * C))
    _nlc_relu_grad_sums(
        g[:head].reshape(rows, B * C), y[:head].reshape(rows, B * C),
        x[:head].reshape(rows, B * C), dz[:head].reshape(rows, B * C), _tile(mh, B), bounds,
        cb, p1, p2,
    )  # fmt: skip
    _add_folded(p1, p2, C, s1, s2)
    if head < R:  # the last R % B rows, untiled
        p1 = np.zeros((1, C))
        p2 = np.zeros((1, C))
        _nlc_relu_grad_sums(
            g[head:], y[head:], x[head:], dz[head:], mh, chunk_bounds(R - head, C, 1, 1), C,
            p1, p2,
        )  # fmt: skip
        _add_folded(p1, p2, C, s1, s2)
    return s1, s2


# Layout stubs, resolved at compile time by the rank of x (3: ncl, 2: nlc).


def add_apply(x, r, y, mh, a, b, act, threads):  # pragma: no cover - compile-time stub
    """``y = act((x - mh) * a + b + r)`` per channel."""
    raise NotImplementedError


def relu_grad_moments(g, y, x, dz, mh, threads):  # pragma: no cover - compile-time stub
    """``dz = g * [y > 0]``; ``(sum dz, sum dz * (x - mh))`` per channel."""
    raise NotImplementedError


@overload(add_apply)
def _add_apply_impl(x, r, y, mh, a, b, act, threads):
    return _ncl_add_apply_all.py_func if x.ndim == 3 else _nlc_add_apply_all.py_func


@overload(relu_grad_moments)
def _relu_grad_moments_impl(g, y, x, dz, mh, threads):
    return _ncl_relu_grad_moments.py_func if x.ndim == 3 else _nlc_relu_grad_moments.py_func


# ---------------------------------------------------------------------------------------
# Drivers (entry points). Vectors are the data type; length 0 stands for "absent".

_X = {"ncl": "{t}[:, :, ::1]", "nlc": "{t}[:, ::1]"}
_V = "{t}[::1]"


def _sig(template: str) -> dict[str, str]:
    return {layout: template.replace("X", x) for layout, x in _X.items()}


@entry(**_sig(f"void(X, X, X, {_V}, {_V}, float64, int64, {_V}, {_V}, int64)"))
def bn_add_forward(x, r, y, w, b, eps, act, mean_out, var_out, threads):
    """Training forward: batch statistics of ``x``, then ``y = act(x_hat * w + b + r)``."""
    shift, s1, s2 = moments(x, threads)
    mean, var = finish_stats(shift, s1, s2, x.size // mean_out.shape[0], mean_out, var_out)
    mh, a, bb, _ = affine_coeffs(mean, invstd_of(var, eps), w, b, x)
    add_apply(x, r, y, mh, a, bb, act, threads)


@entry(**_sig(f"void(X, X, X, {_V}, {_V}, {_V}, {_V}, float64, int64, int64)"))
def bn_add_eval_forward(x, r, y, running_mean, running_var, w, b, eps, act, threads):
    """Inference forward with fixed statistics: ``y = act(x_hat * w + b + r)``."""
    inv = invstd_of(running_var.astype(np.float64), eps)
    mh, a, bb, _ = affine_coeffs(running_mean.astype(np.float64), inv, w, b, x)
    add_apply(x, r, y, mh, a, bb, act, threads)


@entry(**_sig(f"void(X, X, X, X, X, {_V}, {_V}, {_V}, float64, boolean, {_V}, {_V}, int64)"))
def bn_add_relu_backward(
    g, y, x, dz, dx, w, mean, var, eps, batch_statistics, dw_out, db_out, threads
):
    """Backward of ``y = relu(BN(x) + r)``: ``dz = g * [y > 0]`` (the residual's gradient),
    ``dx`` (``batch_statistics``: through the batch statistics; else ``dz * w * invstd``),
    ``dweight = sum(dz * x_hat)``, ``dbias = sum(dz)``."""
    inv = invstd_of(var.astype(np.float64), eps)
    no_bias = np.empty(0, x.dtype)
    zero = x.dtype.type(0)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, no_bias, x)
    s1, s2 = relu_grad_moments(g, y, x, dz, mh, threads)
    dy_xhat = _dy_xhat(s1, s2, lo, inv)
    if batch_statistics:
        k1, k2, k3 = grad_coeffs(inv, w, s1, dy_xhat, x.size // mean.shape[0], lo, x)
        grad_apply_all(dz, x, dx, mh, a, bb, k1, k2, k3, IDENTITY, zero, threads)
    else:
        k1, _, _ = grad_coeffs(inv, w, np.empty(0), np.empty(0), 1, lo, x)
        zeros = np.zeros(k1.shape[0], x.dtype)
        apply(dz, dx, zeros, k1, zeros, IDENTITY, zero, threads)
    _store(dy_xhat, dw_out)
    _store(s1, db_out)
