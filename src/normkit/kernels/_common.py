"""Loops shared by the kernels: shifted sums, fused activations, chunk bounds.

Everything here is a non-parallel ``@kernel`` helper inlined into the parallel kernels.
Inner loops run over 1-D contiguous views with ``range(view.shape[0])`` (docs/kernels.md, rule R1) and keep
the element type: float32 data is summed in float32 SIMD partials over blocks of at most
``BLOCK`` elements, and each block's partial is added in float64 (docs/kernels.md, rule R3).

Activations (``act`` codes, the same set as :mod:`normkit.backends.torch_ops`)::

    IDENTITY  v                       RELU   max(v, 0)        LEAKY_RELU  v > 0 ? v : s*v
    SILU      v * sigmoid(v)          GELU   v * Phi(v)  (exact, erf-based)
    RELU6     min(max(v, 0), 6)       HARDSWISH  v * min(max(v + 3, 0), 6) / 6

and their derivatives for the backward, ``dy = grad * act'(pre)``. silu and gelu (and their
derivatives) come from :mod:`normkit.kernels._activations`: libm for float64, vectorizable
polynomial approximations for float32.
"""

from __future__ import annotations

import math

import numpy as np

from normkit.kernels._activations import gelu, gelu_grad, silu, silu_grad
from normkit.kernels._jit import kernel

IDENTITY, RELU, LEAKY_RELU, SILU, GELU, RELU6, HARDSWISH = 0, 1, 2, 3, 4, 5, 6
ACT_CODES = {
    "identity": IDENTITY,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "silu": SILU,
    "gelu": GELU,
    "relu6": RELU6,
    "hardswish": HARDSWISH,
}

BLOCK = 4096  # elements per float32 partial sum (R3 in docs/kernels.md)
ROW_BLOCK = 128  # rows per float32 column partial before it is flushed to float64
MIN_CHUNK = 32768  # elements below which a parallel task is not worth a thread


@kernel
def chunk_bounds(units, unit_size, threads, align):
    """At most ``threads`` contiguous chunks of ``range(units)``: int64 bounds.

    A chunk holds at least ``MIN_CHUNK`` elements (``unit_size`` each) unless there is only
    one; inner bounds are multiples of ``align`` units.
    """
    chunks = max(1, min(threads, units, units * unit_size // MIN_CHUNK))
    bounds = np.empty(chunks + 1, np.int64)
    for t in range(chunks):
        bounds[t] = (t * units // chunks) // align * align
    bounds[chunks] = units
    return bounds


@kernel
def shift_of(seg):
    """Mean of the first <= 64 elements of ``seg`` (0 if not finite): the sums' shift."""
    n = min(seg.shape[0], 64)
    s = 0.0
    for i in range(n):
        s += seg[i]
    s = s / n if n > 0 else 0.0
    if not math.isfinite(s):
        s = 0.0
    return s


# ---------------------------------------------------------------------------------------
# Reductions over one contiguous segment.


@kernel(inline=True)
def shifted_sums(seg, k):
    """``(sum(x - k), sum((x - k)**2))`` in float64 over float-typed blocks."""
    z = seg.dtype.type(0)
    s1 = 0.0
    s2 = 0.0
    start = 0
    n = seg.shape[0]
    while start < n:
        blk = seg[start : min(n, start + BLOCK)]
        a1 = z
        a2 = z
        for i in range(blk.shape[0]):
            d = blk[i] - k
            a1 += d
            a2 += d * d
        s1 += a1
        s2 += a2
        start += BLOCK
    return s1, s2


@kernel(inline=True)
def _grad_block(g, x, m, a, b, act, slope):
    """Block partials ``(sum dy, sum dy * (x - m))`` with ``dy = g * act'((x - m) * a + b)``."""
    z = x.dtype.type(0)
    six = x.dtype.type(6)
    three = x.dtype.type(3)
    half = x.dtype.type(0.5)
    s1 = z
    s2 = z
    n = x.shape[0]
    if act == IDENTITY:
        for i in range(n):
            s1 += g[i]
            s2 += g[i] * (x[i] - m)
    elif act == RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m) * a + b > z else z
            s1 += dy
            s2 += dy * (x[i] - m)
    elif act == LEAKY_RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m) * a + b > z else g[i] * slope
            s1 += dy
            s2 += dy * (x[i] - m)
    elif act == RELU6:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = z if (v <= z or v >= six) else g[i]
            s1 += dy
            s2 += dy * (x[i] - m)
    elif act == HARDSWISH:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = z if v < -three else (g[i] * (v / three + half) if v <= three else g[i])
            s1 += dy
            s2 += dy * (x[i] - m)
    elif act == SILU:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = g[i] * silu_grad(v)
            s1 += dy
            s2 += dy * (x[i] - m)
    else:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = g[i] * gelu_grad(v)
            s1 += dy
            s2 += dy * (x[i] - m)
    return s1, s2


@kernel(inline=True)
def grad_sums(g, x, m, a, b, act, slope):
    """``(sum dy, sum dy * (x - m))`` in float64, ``dy = g * act'((x - m) * a + b)``."""
    s1 = 0.0
    s2 = 0.0
    start = 0
    n = x.shape[0]
    while start < n:
        stop = min(n, start + BLOCK)
        a1, a2 = _grad_block(g[start:stop], x[start:stop], m, a, b, act, slope)
        s1 += a1
        s2 += a2
        start = stop
    return s1, s2


# ---------------------------------------------------------------------------------------
# Elementwise loops, scalar coefficients (one segment of one channel/plane).


@kernel(inline=True)
def affine_act(src, dst, m, a, b, act, slope):
    """``dst = act((src - m) * a + b)``."""
    z = src.dtype.type(0)
    six = src.dtype.type(6)
    three = src.dtype.type(3)
    n = src.shape[0]
    if act == IDENTITY:
        for i in range(n):
            dst[i] = (src[i] - m) * a + b
    elif act == RELU:
        for i in range(n):
            v = (src[i] - m) * a + b
            dst[i] = z if v <= z else v
    elif act == LEAKY_RELU:
        for i in range(n):
            v = (src[i] - m) * a + b
            dst[i] = v * slope if v <= z else v
    elif act == RELU6:
        for i in range(n):
            v = (src[i] - m) * a + b
            dst[i] = z if v <= z else (six if v >= six else v)
    elif act == HARDSWISH:
        for i in range(n):
            v = (src[i] - m) * a + b
            t = v + three
            dst[i] = v * (z if t <= z else (six if t >= six else t)) / six
    elif act == SILU:
        for i in range(n):
            v = (src[i] - m) * a + b
            dst[i] = silu(v)
    else:
        for i in range(n):
            v = (src[i] - m) * a + b
            dst[i] = gelu(v)


@kernel(inline=True)
def grad_apply(g, x, dx, m, k1, k2, k3, a, b, act, slope):
    """``dx = k1 * dy - k2 * (x - m) - k3`` with ``dy = g * act'((x - m) * a + b)``."""
    z = x.dtype.type(0)
    six = x.dtype.type(6)
    three = x.dtype.type(3)
    half = x.dtype.type(0.5)
    n = x.shape[0]
    if act == IDENTITY:
        for i in range(n):
            dx[i] = k1 * g[i] - k2 * (x[i] - m) - k3
    elif act == RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m) * a + b > z else z
            dx[i] = k1 * dy - k2 * (x[i] - m) - k3
    elif act == LEAKY_RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m) * a + b > z else g[i] * slope
            dx[i] = k1 * dy - k2 * (x[i] - m) - k3
    elif act == RELU6:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = z if (v <= z or v >= six) else g[i]
            dx[i] = k1 * dy - k2 * (x[i] - m) - k3
    elif act == HARDSWISH:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = z if v < -three else (g[i] * (v / three + half) if v <= three else g[i])
            dx[i] = k1 * dy - k2 * (x[i] - m) - k3
    elif act == SILU:
        for i in range(n):
            v = (x[i] - m) * a + b
            dx[i] = k1 * (g[i] * silu_grad(v)) - k2 * (x[i] - m) - k3
    else:
        for i in range(n):
            v = (x[i] - m) * a + b
            dy = g[i] * gelu_grad(v)
            dx[i] = k1 * dy - k2 * (x[i] - m) - k3


# ---------------------------------------------------------------------------------------
# Elementwise loops, vector coefficients (one row of a channels-last (rows, C) matrix).


@kernel
def affine_act_row(src, dst, m, a, b, act, slope):
    """``dst[c] = act((src[c] - m[c]) * a[c] + b[c])``."""
    z = src.dtype.type(0)
    six = src.dtype.type(6)
    three = src.dtype.type(3)
    n = src.shape[0]
    if act == IDENTITY:
        for i in range(n):
            dst[i] = (src[i] - m[i]) * a[i] + b[i]
    elif act == RELU:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i]
            dst[i] = z if v <= z else v
    elif act == LEAKY_RELU:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i]
            dst[i] = v * slope if v <= z else v
    elif act == RELU6:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i]
            dst[i] = z if v <= z else (six if v >= six else v)
    elif act == HARDSWISH:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i]
            t = v + three
            dst[i] = v * (z if t <= z else (six if t >= six else t)) / six
    elif act == SILU:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i]
            dst[i] = silu(v)
    else:
        for i in range(n):
            v = (src[i] - m[i]) * a[i] + b[i]
            dst[i] = gelu(v)


@kernel
def grad_sums_row(g, x, m, a, b, act, slope, acc1, acc2):
    """``acc1[c] += dy[c]; acc2[c] += dy[c] * (x[c] - m[c])``, ``dy = g * act'((x - m) * a + b)``."""
    z = x.dtype.type(0)
    six = x.dtype.type(6)
    three = x.dtype.type(3)
    half = x.dtype.type(0.5)
    n = x.shape[0]
    if act == IDENTITY:
        for i in range(n):
            acc1[i] += g[i]
            acc2[i] += g[i] * (x[i] - m[i])
    elif act == RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m[i]) * a[i] + b[i] > z else z
            acc1[i] += dy
            acc2[i] += dy * (x[i] - m[i])
    elif act == LEAKY_RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m[i]) * a[i] + b[i] > z else g[i] * slope
            acc1[i] += dy
            acc2[i] += dy * (x[i] - m[i])
    elif act == RELU6:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = z if (v <= z or v >= six) else g[i]
            acc1[i] += dy
            acc2[i] += dy * (x[i] - m[i])
    elif act == HARDSWISH:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = z if v < -three else (g[i] * (v / three + half) if v <= three else g[i])
            acc1[i] += dy
            acc2[i] += dy * (x[i] - m[i])
    elif act == SILU:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = g[i] * silu_grad(v)
            acc1[i] += dy
            acc2[i] += dy * (x[i] - m[i])
    else:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = g[i] * gelu_grad(v)
            acc1[i] += dy
            acc2[i] += dy * (x[i] - m[i])


@kernel
def grad_apply_row(g, x, dx, m, k1, k2, k3, a, b, act, slope):
    """``dx[c] = k1[c] * dy[c] - k2[c] * (x[c] - m[c]) - k3[c]``."""
    z = x.dtype.type(0)
    six = x.dtype.type(6)
    three = x.dtype.type(3)
    half = x.dtype.type(0.5)
    n = x.shape[0]
    if act == IDENTITY:
        for i in range(n):
            dx[i] = k1[i] * g[i] - k2[i] * (x[i] - m[i]) - k3[i]
    elif act == RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m[i]) * a[i] + b[i] > z else z
            dx[i] = k1[i] * dy - k2[i] * (x[i] - m[i]) - k3[i]
    elif act == LEAKY_RELU:
        for i in range(n):
            dy = g[i] if (x[i] - m[i]) * a[i] + b[i] > z else g[i] * slope
            dx[i] = k1[i] * dy - k2[i] * (x[i] - m[i]) - k3[i]
    elif act == RELU6:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = z if (v <= z or v >= six) else g[i]
            dx[i] = k1[i] * dy - k2[i] * (x[i] - m[i]) - k3[i]
    elif act == HARDSWISH:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = z if v < -three else (g[i] * (v / three + half) if v <= three else g[i])
            dx[i] = k1[i] * dy - k2[i] * (x[i] - m[i]) - k3[i]
    elif act == SILU:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = g[i] * silu_grad(v)
            dx[i] = k1[i] * dy - k2[i] * (x[i] - m[i]) - k3[i]
    else:
        for i in range(n):
            v = (x[i] - m[i]) * a[i] + b[i]
            dy = g[i] * gelu_grad(v)
            dx[i] = k1[i] * dy - k2[i] * (x[i] - m[i]) - k3[i]


# ---------------------------------------------------------------------------------------
# Four rows at a time (identity activation): each shift and accumulator element is loaded
# and stored once per four values, which keeps channels-last sums memory-bound, not L1-bound.
# (The same trick does not pay for the elementwise passes: four output streams defeat
# LLVM's alias checks.)


@kernel
def shifted_sums_rows4(r0, r1, r2, r3, k, blk1, blk2):
    """``blk1[c] += sum_i (r_i[c] - k[c])``, ``blk2[c] += sum_i (r_i[c] - k[c])**2``."""
    for c in range(k.shape[0]):
        kc = k[c]
        d0 = r0[c] - kc
        d1 = r1[c] - kc
        d2 = r2[c] - kc
        d3 = r3[c] - kc
        blk1[c] += (d0 + d1) + (d2 + d3)
        blk2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)


@kernel
def grad_sums_rows4(g0, g1, g2, g3, x0, x1, x2, x3, m, blk1, blk2):
    """``blk1[c] += sum_i g_i[c]``, ``blk2[c] += sum_i g_i[c] * (x_i[c] - m[c])``."""
    for c in range(m.shape[0]):
        mc = m[c]
        blk1[c] += (g0[c] + g1[c]) + (g2[c] + g3[c])
        blk2[c] += (g0[c] * (x0[c] - mc) + g1[c] * (x1[c] - mc)) + (
            g2[c] * (x2[c] - mc) + g3[c] * (x3[c] - mc)
        )
