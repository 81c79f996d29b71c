"""Masked normalization kernels: statistics and gradients from the valid positions of a
padded batch only, padded positions written as exactly 0.

Layouts (the mask is ``uint8``, 1 = valid, one value per position shared by all channels):

* ``ncl``: ``x (N, C, L)`` C-contiguous with ``mask (N, L)``; the passes sweep ``(n, c)``
  planes, one chunk of planes per thread, and read the plane's mask row alongside it
  (``N * L`` bytes, cache-resident);
* ``nlc``: ``x (R, C)`` rows with channels fastest (channels_last, ``(N, L, C)`` sequences
  seen as ``(N, C, L)``, ``(N, C)`` batches) with ``mask (R,)``: one mask byte per row, and
  a padded row is skipped by the reductions and zero-filled by the elementwise passes.

No gather or scatter copy: every pass reads ``x`` (and ``grad``) where it lies and selects
by the mask in the loop, so the values at padded positions are never used (NaN there is
harmless). With ``n`` the valid count per channel (BatchNorm: the mask's sum)::

    mean = k + S1 / n,  var = S2 / n - (S1 / n)**2,  S_p = sum_valid (x - k)**p
    y    = act((x - mean) * invstd * w + b)  at valid positions, 0 elsewhere
    sum_dy = sum_valid dy,  sum_dy_xhat = sum_valid dy * x_hat,  dy = grad * act'(pre)
    dx   = w * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)  at valid positions, 0

``k`` is the mean of the first <= 64 valid values of each channel (the shift that keeps a
large mean from costing precision). The identity activation has branch-free vectorized
loops; the other activations evaluate a scalar ``act``/``act'`` in float64 per element.

GroupNorm (``masked_gn_*``, ``ncl`` only; InstanceNorm is ``G = C``): group ``(n, g)`` has
``n = C / G * counts[n]`` valid values, ``counts`` the valid positions of each sample; a
group without valid positions gets ``mean = var = 0`` and outputs zeros.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange
from numba.extending import overload

from normkit.kernels._activations import gelu, gelu_grad, silu, silu_grad
from normkit.kernels._common import (
    BLOCK,
    GELU,
    HARDSWISH,
    IDENTITY,
    LEAKY_RELU,
    RELU,
    RELU6,
    ROW_BLOCK,
    SILU,
    affine_act_row,
    chunk_bounds,
    grad_apply_row,
    grad_sums_row,
)
from normkit.kernels._jit import entry, kernel
from normkit.kernels.batch_norm_coeffs import (
    _dy_xhat,
    _store,
    affine_coeffs,
    finish_stats,
    grad_coeffs,
    invstd_of,
)

SHIFT_VALUES = 64  # valid values averaged into each channel's shift

# ---------------------------------------------------------------------------------------
# Scalar activations (float64), for the non-identity branches.


@kernel(inline=True)
def act_value(v, act, slope):
    """``act(v)`` in float64."""
    if act == RELU:
        return v if v > 0.0 else 0.0
    if act == LEAKY_RELU:
        return v if v > 0.0 else v * slope
    if act == SILU:
        return silu(v)
    if act == GELU:
        return gelu(v)
    if act == RELU6:
        return 0.0 if v <= 0.0 else (6.0 if v >= 6.0 else v)
    if act == HARDSWISH:
        t = v + 3.0
        return v * (0.0 if t <= 0.0 else (6.0 if t >= 6.0 else t)) / 6.0
    return v


@kernel(inline=True)
def act_slope(v, act, slope):
    """``act'(v)`` in float64 (the derivative torch's autograd uses at the kinks)."""
    if act == RELU:
        return 1.0 if v > 0.0 else 0.0
    if act == LEAKY_RELU:
        return 1.0 if v > 0.0 else slope
    if act == SILU:
        return silu_grad(v)
    if act == GELU:
        return gelu_grad(v)
    if act == RELU6:
        return 0.0 if (v <= 0.0 or v >= 6.0) else 1.0
    if act == HARDSWISH:
        return 0.0 if v < -3.0 else (v / 3.0 + 0.5 if v <= 3.0 else 1.0)
    return 1.0


# ---------------------------------------------------------------------------------------
# One segment (a plane's row of L values) and its mask row.


@kernel(inline=True)
def masked_sums(seg, mk, k):
    """``(sum_valid (x - k), sum_valid (x - k)**2)`` in float64 over float-typed blocks."""
    z = seg.dtype.type(0)
    s1 = 0.0
    s2 = 0.0
    start = 0
    n = seg.shape[0]
    while start < n:
        stop = min(n, start + BLOCK)
        blk = seg[start:stop]
        mb = mk[start:stop]
        a1 = z
        a2 = z
        for i in range(blk.shape[0]):
            d = blk[i] - k if mb[i] != 0 else z
            a1 += d
            a2 += d * d
        s1 += a1
        s2 += a2
        start = stop
    return s1, s2


@kernel(inline=True)
def masked_affine_act(src, mk, dst, m, a, b, act, slope):
    """``dst = act((src - m) * a + b)`` at valid positions, 0 elsewhere."""
    z = src.dtype.type(0)
    n = src.shape[0]
    if act == IDENTITY:
        for i in range(n):
            dst[i] = (src[i] - m) * a + b if mk[i] != 0 else z
    else:
        for i in range(n):
            if mk[i] != 0:
                dst[i] = act_value(float((src[i] - m) * a + b), act, slope)
            else:
                dst[i] = z


@kernel(inline=True)
def _masked_grad_block(g, x, mk, m, a, b, act, slope):
    z = x.dtype.type(0)
    s1 = z
    s2 = z
    n = x.shape[0]
    if act == IDENTITY:
        for i in range(n):
            gi = g[i] if mk[i] != 0 else z
            d = x[i] - m if mk[i] != 0 else z
            s1 += gi
            s2 += gi * d
    else:
        for i in range(n):
            if mk[i] != 0:
                d = x[i] - m
                dy = x.dtype.type(g[i] * act_slope(float(d * a + b), act, slope))
                s1 += dy
                s2 += dy * d
    return s1, s2


@kernel(inline=True)
def masked_grad_sums(g, x, mk, m, a, b, act, slope):
    """``(sum_valid dy, sum_valid dy * (x - m))`` in float64, ``dy = g * act'((x - m) * a + b)``."""
    s1 = 0.0
    s2 = 0.0
    start = 0
    n = x.shape[0]
    while start < n:
        stop = min(n, start + BLOCK)
        u, v = _masked_grad_block(g[start:stop], x[start:stop], mk[start:stop], m, a, b, act, slope)
        s1 += u
        s2 += v
        start = stop
    return s1, s2


@kernel(inline=True)
def masked_grad_apply(g, x, mk, dx, m, k1, k2, k3, a, b, act, slope):
    """``dx = k1 * dy - k2 * (x - m) - k3`` at valid positions, 0 elsewhere."""
    z = x.dtype.type(0)
    n = x.shape[0]
    if act == IDENTITY:
        for i in range(n):
            dx[i] = k1 * g[i] - k2 * (x[i] - m) - k3 if mk[i] != 0 else z
    else:
        for i in range(n):
            if mk[i] != 0:
                d = x[i] - m
                dy = x.dtype.type(g[i] * act_slope(float(d * a + b), act, slope))
                dx[i] = k1 * dy - k2 * d - k3
            else:
                dx[i] = z


# ---------------------------------------------------------------------------------------
# ncl: x (N, C, L), mask (N, L); plane p = n * C + c.


@kernel
def _first_valid(mk):
    """Flat indices of the first <= SHIFT_VALUES valid entries of ``mk`` (any shape)."""
    flat = mk.reshape(-1)
    out = np.empty(SHIFT_VALUES, np.int64)
    found = 0
    for i in range(flat.shape[0]):
        if flat[i] != 0:
            out[found] = i
            found += 1
            if found == SHIFT_VALUES:
                break
    return out[:found]


@kernel
def _ncl_shift(x, mk):
    _, C, L = x.shape
    idx = _first_valid(mk)
    shift = np.zeros(C, x.dtype)
    if idx.shape[0] == 0:
        return shift
    ns = idx // L  # sample and position of each value, once for every channel
    ls = idx - ns * L
    for c in range(C):
        s = 0.0
        for j in range(idx.shape[0]):
            s += x[ns[j], c, ls[j]]
        s /= idx.shape[0]
        shift[c] = s if math.isfinite(s) else 0.0
    return shift


@kernel(parallel=True)
def _ncl_sums(x, mk, shift, bounds, s1, s2):
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for p in range(bounds[t], bounds[t + 1]):
            n = p // C
            c = p - n * C
            a, b = masked_sums(x[n, c], mk[n], shift[c])
            s1[t, c] += a
            s2[t, c] += b


@kernel(parallel=True)
def _ncl_apply(x, mk, y, mh, a, b, bounds, act, slope):
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for p in range(bounds[t], bounds[t + 1]):
            n = p // C
            c = p - n * C
            masked_affine_act(x[n, c], mk[n], y[n, c], mh[c], a[c], b[c], act, slope)


@kernel(parallel=True)
def _ncl_grad_sums(g, x, mk, mh, a, b, bounds, act, slope, s1, s2):
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for p in range(bounds[t], bounds[t + 1]):
            n = p // C
            c = p - n * C
            u, v = masked_grad_sums(g[n, c], x[n, c], mk[n], mh[c], a[c], b[c], act, slope)
            s1[t, c] += u
            s2[t, c] += v


@kernel(parallel=True)
def _ncl_grad_apply(g, x, mk, dx, mh, a, b, k1, k2, k3, bounds, act, slope):
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for p in range(bounds[t], bounds[t + 1]):
            n = p // C
            c = p - n * C
            masked_grad_apply(
                g[n, c], x[n, c], mk[n], dx[n, c], mh[c], k1[c], k2[c], k3[c], a[c], b[c],
                act, slope,
            )  # fmt: skip


@kernel
def _column_sums(parts):
    out = np.zeros(parts.shape[1])
    for t in range(parts.shape[0]):
        for c in range(parts.shape[1]):
            out[c] += parts[t, c]
    return out


@kernel
def _ncl_bounds(x, threads):
    N, C, L = x.shape
    return chunk_bounds(N * C, L, threads, 1)


@kernel
def _ncl_moments(x, mk, threads):
    bounds = _ncl_bounds(x, threads)
    C = x.shape[1]
    shift = _ncl_shift(x, mk)
    s1 = np.zeros((bounds.shape[0] - 1, C))
    s2 = np.zeros((bounds.shape[0] - 1, C))
    _ncl_sums(x, mk, shift, bounds, s1, s2)
    return shift, _column_sums(s1), _column_sums(s2)


@kernel
def _ncl_apply_all(x, mk, y, mh, a, b, act, slope, threads):
    _ncl_apply(x, mk, y, mh, a, b, _ncl_bounds(x, threads), act, slope)


@kernel
def _ncl_grad_moments(g, x, mk, mh, a, b, act, slope, threads):
    bounds = _ncl_bounds(x, threads)
    C = x.shape[1]
    s1 = np.zeros((bounds.shape[0] - 1, C))
    s2 = np.zeros((bounds.shape[0] - 1, C))
    _ncl_grad_sums(g, x, mk, mh, a, b, bounds, act, slope, s1, s2)
    return _column_sums(s1), _column_sums(s2)


@kernel
def _ncl_grad_apply_all(g, x, mk, dx, mh, a, b, k1, k2, k3, act, slope, threads):
    _ncl_grad_apply(g, x, mk, dx, mh, a, b, k1, k2, k3, _ncl_bounds(x, threads), act, slope)


# ---------------------------------------------------------------------------------------
# nlc: x (R, C) rows, mask (R,).


@kernel
def _nlc_shift(x, mk):
    idx = _first_valid(mk)
    C = x.shape[1]
    acc = np.zeros(C)
    for j in range(idx.shape[0]):
        row = x[idx[j]]
        for c in range(C):
            acc[c] += row[c]
    shift = np.zeros(C, x.dtype)
    if idx.shape[0] == 0:
        return shift
    for c in range(C):
        s = acc[c] / idx.shape[0]
        shift[c] = s if math.isfinite(s) else 0.0
    return shift


@kernel
def _row_sums(x, mk, k, r0, r1, out1, out2):
    """Shifted sums of the valid rows in ``r0:r1``, float-typed partials flushed to float64
    every ``ROW_BLOCK`` rows."""
    C = x.shape[1]
    acc1 = np.zeros(C)
    acc2 = np.zeros(C)
    blk1 = np.zeros(C, x.dtype)
    blk2 = np.zeros(C, x.dtype)
    r = r0
    while r < r1:
        stop = min(r1, r + ROW_BLOCK)
        for rr in range(r, stop):
            if mk[rr] != 0:
                row = x[rr]
                for c in range(C):
                    d = row[c] - k[c]
                    blk1[c] += d
                    blk2[c] += d * d
        for c in range(C):
            acc1[c] += blk1[c]
            acc2[c] += blk2[c]
            blk1[c] = 0
            blk2[c] = 0
        r = stop
    for c in range(C):
        out1[c] = acc1[c]
        out2[c] = acc2[c]


@kernel(parallel=True)
def _nlc_sums(x, mk, shift, bounds, s1, s2):
    for t in prange(bounds.shape[0] - 1):
        _row_sums(x, mk, shift, bounds[t], bounds[t + 1], s1[t], s2[t])


@kernel(parallel=True)
def _nlc_apply(x, mk, y, mh, a, b, bounds, act, slope):
    z = x.dtype.type(0)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            if mk[r] != 0:
                affine_act_row(x[r], y[r], mh, a, b, act, slope)
            else:
                out = y[r]
                for c in range(out.shape[0]):
                    out[c] = z


@kernel
def _row_grad_sums(g, x, mk, mh, a, b, act, slope, r0, r1, out1, out2):
    C = x.shape[1]
    acc1 = np.zeros(C)
    acc2 = np.zeros(C)
    blk1 = np.zeros(C, x.dtype)
    blk2 = np.zeros(C, x.dtype)
    r = r0
    while r < r1:
        stop = min(r1, r + ROW_BLOCK)
        for rr in range(r, stop):
            if mk[rr] != 0:
                grad_sums_row(g[rr], x[rr], mh, a, b, act, slope, blk1, blk2)
        for c in range(C):
            acc1[c] += blk1[c]
            acc2[c] += blk2[c]
            blk1[c] = 0
            blk2[c] = 0
        r = stop
    for c in range(C):
        out1[c] = acc1[c]
        out2[c] = acc2[c]


@kernel(parallel=True)
def _nlc_grad_sums(g, x, mk, mh, a, b, bounds, act, slope, s1, s2):
    for t in prange(bounds.shape[0] - 1):
        _row_grad_sums(g, x, mk, mh, a, b, act, slope, bounds[t], bounds[t + 1], s1[t], s2[t])


@kernel(parallel=True)
def _nlc_grad_apply(g, x, mk, dx, mh, a, b, k1, k2, k3, bounds, act, slope):
    z = x.dtype.type(0)
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            if mk[r] != 0:
                grad_apply_row(g[r], x[r], dx[r], mh, k1, k2, k3, a, b, act, slope)
            else:
                out = dx[r]
                for c in range(out.shape[0]):
                    out[c] = z


@kernel
def _nlc_bounds(x, threads):
    return chunk_bounds(x.shape[0], x.shape[1], threads, 1)


@kernel
def _nlc_moments(x, mk, threads):
    bounds = _nlc_bounds(x, threads)
    C = x.shape[1]
    shift = _nlc_shift(x, mk)
    s1 = np.zeros((bounds.shape[0] - 1, C))
    s2 = np.zeros((bounds.shape[0] - 1, C))
    _nlc_sums(x, mk, shift, bounds, s1, s2)
    return shift, _column_sums(s1), _column_sums(s2)


@kernel
def _nlc_apply_all(x, mk, y, mh, a, b, act, slope, threads):
    _nlc_apply(x, mk, y, mh, a, b, _nlc_bounds(x, threads), act, slope)


@kernel
def _nlc_grad_moments(g, x, mk, mh, a, b, act, slope, threads):
    bounds = _nlc_bounds(x, threads)
    C = x.shape[1]
    s1 = np.zeros((bounds.shape[0] - 1, C))
    s2 = np.zeros((bounds.shape[0] - 1, C))
    _nlc_grad_sums(g, x, mk, mh, a, b, bounds, act, slope, s1, s2)
    return _column_sums(s1), _column_sums(s2)


@kernel
def _nlc_grad_apply_all(g, x, mk, dx, mh, a, b, k1, k2, k3, act, slope, threads):
    _nlc_grad_apply(g, x, mk, dx, mh, a, b, k1, k2, k3, _nlc_bounds(x, threads), act, slope)


# ---------------------------------------------------------------------------------------
# Layout stubs, resolved at compile time by the rank of x (3: ncl, 2: nlc).


def moments(x, mk, threads):  # pragma: no cover - compile-time stub
    """``(shift (C,), S1 (C,), S2 (C,))``: shifted sums of the valid positions."""
    raise NotImplementedError


def apply(x, mk, y, mh, a, b, act, slope, threads):  # pragma: no cover - compile-time stub
    """``y = act((x - mh) * a + b)`` at valid positions, 0 elsewhere."""
    raise NotImplementedError


def grad_moments(g, x, mk, mh, a, b, act, slope, threads):  # pragma: no cover - stub
    """``(sum_valid dy, sum_valid dy * (x - mh))`` per channel."""
    raise NotImplementedError


def grad_apply_all(g, x, mk, dx, mh, a, b, k1, k2, k3, act, slope, threads):  # pragma: no cover
    """``dx = k1 * dy - k2 * (x - mh) - k3`` at valid positions, 0 elsewhere."""
    raise NotImplementedError


@overload(moments)
def _moments_impl(x, mk, threads):
    return _ncl_moments.py_func if x.ndim == 3 else _nlc_moments.py_func


@overload(apply)
def _apply_impl(x, mk, y, mh, a, b, act, slope, threads):
    return _ncl_apply_all.py_func if x.ndim == 3 else _nlc_apply_all.py_func


@overload(grad_moments)
def _grad_moments_impl(g, x, mk, mh, a, b, act, slope, threads):
    return _ncl_grad_moments.py_func if x.ndim == 3 else _nlc_grad_moments.py_func


@overload(grad_apply_all)
def _grad_apply_impl(g, x, mk, dx, mh, a, b, k1, k2, k3, act, slope, threads):
    return _ncl_grad_apply_all.py_func if x.ndim == 3 else _nlc_grad_apply_all.py_func


# ---------------------------------------------------------------------------------------
# BatchNorm drivers. Vectors are the data type; length 0 stands for "absent".

_X = {"ncl": "{t}[:, :, ::1]", "nlc": "{t}[:, ::1]"}
_M = {"ncl": "uint8[:, ::1]", "nlc": "uint8[::1]"}
_V = "{t}[::1]"


def _sig(template: str) -> dict[str, str]:
    return {layout: template.replace("X", x).replace("M", _M[layout]) for layout, x in _X.items()}


@entry(**_sig(f"void(X, M, float64, {_V}, {_V}, int64)"))
def masked_bn_stats(x, mk, count, mean_out, var_out, threads):
    """Per-channel mean and biased variance of the valid positions (``count`` of them)."""
    shift, s1, s2 = moments(x, mk, threads)
    finish_stats(shift, s1, s2, count, mean_out, var_out)


@entry(**_sig(f"void(X, M, X, {_V}, {_V}, {_V}, {_V}, int64, float64, int64)"))
def masked_bn_elemt(x, mk, y, mean, invstd, w, b, act, slope, threads):
    """``y = act((x - mean) * invstd * w + b)`` at valid positions, 0 elsewhere."""
    mh, a, bb, _ = affine_coeffs(mean.astype(np.float64), invstd.astype(np.float64), w, b, x)
    apply(x, mk, y, mh, a, bb, act, slope, threads)


@entry(**_sig(f"void(X, X, M, {_V}, {_V}, {_V}, {_V}, int64, float64, {_V}, {_V}, int64)"))
def masked_bn_backward_reduce(g, x, mk, mean, invstd, w, b, act, slope, sum_dy, sum_dy_xhat,
                              threads):  # fmt: skip
    """``sum_valid(dy)`` and ``sum_valid(dy * x_hat)`` per channel."""
    inv = invstd.astype(np.float64)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, b, x)
    s1, s2 = grad_moments(g, x, mk, mh, a, bb, act, slope, threads)
    _store(s1, sum_dy)
    _store(_dy_xhat(s1, s2, lo, inv), sum_dy_xhat)


@entry(**_sig(
    f"void(X, X, M, X, {_V}, {_V}, {_V}, {_V}, {_V}, {_V}, float64, int64, float64, int64)"
))  # fmt: skip
def masked_bn_backward_elemt(g, x, mk, dx, mean, invstd, w, b, sum_dy, sum_dy_xhat, count, act,
                             slope, threads):  # fmt: skip
    """``dx = w * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)`` at valid positions
    (sums of length 0: constant statistics, ``dx = dy * w * invstd``), 0 elsewhere."""
    inv = invstd.astype(np.float64)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, b, x)
    k1, k2, k3 = grad_coeffs(
        inv, w, sum_dy.astype(np.float64), sum_dy_xhat.astype(np.float64), count, lo, x
    )
    grad_apply_all(g, x, mk, dx, mh, a, bb, k1, k2, k3, act, slope, threads)


@entry(**_sig(f"void(X, M, X, {_V}, {_V}, float64, int64, float64, float64, {_V}, {_V}, int64)"))
def masked_bn_forward(x, mk, y, w, b, eps, act, slope, count, mean_out, var_out, threads):
    """Training forward: statistics of the valid positions, then the masked ``y``."""
    shift, s1, s2 = moments(x, mk, threads)
    mean, var = finish_stats(shift, s1, s2, count, mean_out, var_out)
    mh, a, bb, _ = affine_coeffs(mean, invstd_of(var, eps), w, b, x)
    apply(x, mk, y, mh, a, bb, act, slope, threads)


@entry(**_sig(
    f"void(X, X, M, X, {_V}, {_V}, {_V}, {_V}, float64, int64, float64, float64, {_V}, {_V},"
    " int64)"
))  # fmt: skip
def masked_bn_backward(g, x, mk, dx, w, b, mean, var, eps, act, slope, count, dw_out, db_out,
                       threads):  # fmt: skip
    """Training backward: ``dx`` (0 at padded positions), ``dweight = sum_valid(dy * x_hat)``,
    ``dbias = sum_valid(dy)``."""
    inv = invstd_of(var.astype(np.float64), eps)
    mh, a, bb, lo = affine_coeffs(mean.astype(np.float64), inv, w, b, x)
    s1, s2 = grad_moments(g, x, mk, mh, a, bb, act, slope, threads)
    dy_xhat = _dy_xhat(s1, s2, lo, inv)
    k1, k2, k3 = grad_coeffs(inv, w, s1, dy_xhat, count, lo, x)
    grad_apply_all(g, x, mk, dx, mh, a, bb, k1, k2, k3, act, slope, threads)
    _store(dy_xhat, dw_out)
    _store(s1, db_out)


# ---------------------------------------------------------------------------------------
# GroupNorm / InstanceNorm: x (N, C, L), mask (N, L), counts (N,) valid positions per sample.


@kernel
def _group_shift(x, mk, n, c0, K):
    """Mean of the first <= SHIFT_VALUES valid values of group ``(n, c0:c0 + K)``."""
    L = x.shape[2]
    s = 0.0
    found = 0
    for c in range(c0, c0 + K):
        for i in range(L):
            if mk[n, i] != 0:
                s += x[n, c, i]
                found += 1
                if found == SHIFT_VALUES:
                    break
        if found == SHIFT_VALUES:
            break
    if found == 0:
        return 0.0
    s /= found
    return s if math.isfinite(s) else 0.0


@kernel(parallel=True)
def _gn_forward_groups(x, mk, y, counts, G, w, b, eps, mean_out, var_out):
    N, C = x.shape[0], x.shape[1]
    K = C // G
    for j in prange(N * G):
        n = j // G
        c0 = (j - n * G) * K
        k = x.dtype.type(_group_shift(x, mk, n, c0, K))
        s1 = 0.0
        s2 = 0.0
        for c in range(c0, c0 + K):
            a1, a2 = masked_sums(x[n, c], mk[n], k)
            s1 += a1
            s2 += a2
        cnt = K * counts[n]
        mean = 0.0
        var = 0.0
        if cnt > 0:
            d = s1 / cnt
            var = max(s2 / cnt - d * d, 0.0)
            mean = k + d
        mean_out[j] = mean
        var_out[j] = var
        rstd = 1.0 / np.sqrt(var + eps)
        mh = x.dtype.type(mean)
        lo = mean - mh
        for c in range(c0, c0 + K):
            am = rstd * (w[c] if w.shape[0] > 0 else 1.0)
            bc = (b[c] if b.shape[0] > 0 else 0.0) - lo * am
            masked_affine_act(
                x[n, c], mk[n], y[n, c], mh, x.dtype.type(am), x.dtype.type(bc), IDENTITY, 0.0
            )


@kernel(parallel=True)
def _gn_backward_groups(g, x, mk, dx, counts, G, w, mean, var, eps, sg, sgx):
    N, C = x.shape[0], x.shape[1]
    K = C // G
    zero = x.dtype.type(0)
    for j in prange(N * G):
        n = j // G
        c0 = (j - n * G) * K
        m = x.dtype.type(mean[j])
        rstd = 1.0 / np.sqrt(var[j] + eps)
        A = 0.0
        B = 0.0
        for c in range(c0, c0 + K):
            u, v = masked_grad_sums(g[n, c], x[n, c], mk[n], m, zero, zero, IDENTITY, 0.0)
            sg[n, c] = u
            sgx[n, c] = v
            wc = w[c] if w.shape[0] > 0 else 1.0
            A += wc * u
            B += wc * v * rstd
        cnt = K * counts[n]
        k2 = x.dtype.type(rstd * B / cnt * rstd) if cnt > 0 else zero
        k3 = x.dtype.type(rstd * A / cnt) if cnt > 0 else zero
        for c in range(c0, c0 + K):
            k1 = x.dtype.type(rstd * (w[c] if w.shape[0] > 0 else 1.0))
            masked_grad_apply(
                g[n, c], x[n, c], mk[n], dx[n, c], m, k1, k2, k3, zero, zero, IDENTITY, 0.0
            )


_GX = "{t}[:, :, ::1]"
_GM = "uint8[:, ::1]"
_GC = "float64[::1]"


@entry(ncl=f"void({_GX}, {_GM}, {_GX}, {_GC}, int64, {_V}, {_V}, float64, {_V}, {_V}, int64)")
def masked_gn_forward(x, mk, y, counts, G, w, b, eps, mean_out, var_out, threads):
    """Masked GroupNorm forward; ``mean_out``/``var_out`` are ``(N * G,)``."""
    _gn_forward_groups(x, mk, y, counts, G, w, b, eps, mean_out, var_out)


@entry(
    ncl=f"void({_GX}, {_GX}, {_GM}, {_GX}, {_GC}, int64, {_V}, {_V}, {_V}, float64, {_V}, {_V},"
    " int64)"
)
def masked_gn_backward(g, x, mk, dx, counts, G, w, mean, var, eps, dw_out, db_out, threads):
    """Masked GroupNorm backward: ``dx`` (0 at padded positions), ``dweight``, ``dbias``."""
    N, C = x.shape[0], x.shape[1]
    sg = np.empty((N, C))
    sgx = np.empty((N, C))
    _gn_backward_groups(g, x, mk, dx, counts, G, w, mean, var, eps, sg, sgx)
    K = C // G
    for c in range(C):
        dw = 0.0
        db = 0.0
        for n in range(N):
            j = n * G + c // K
            dw += sgx[n, c] / np.sqrt(var[j] + eps)
            db += sg[n, c]
        if dw_out.shape[0] > 0:
            dw_out[c] = dw
        db_out[c] = db
