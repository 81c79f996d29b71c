"""Kernels of the batch-free and response norms: FilterResponseNorm, EvoNorm-B0, EvoNorm-S0,
GlobalResponseNorm and the channel RMS norm of NCHW maps (formulas:
:mod:`normkit.reference_batch_free`).

Layouts: ``ncl`` is ``x (N, C, L)`` C-contiguous, a *plane* ``x[n, c]`` is contiguous;
``nlc`` (GlobalResponseNorm only) is ``x (N, L, C)``, channels fastest. Statistics and
parameter-gradient partials are float64 (float32 data is summed in float32 blocks of at
most ``BLOCK`` values flushed to float64); the statistics the backward needs are returned
in float64 arrays, so the backward recomputes exactly the forward's intermediate values
(a TLU or max decision is the same in both).

Work is split into at most ``threads`` chunks of whole units (planes, groups, row tiles;
``chunk_bounds``); a unit is read from memory once, then revisited from cache:

* ``frn_*``: per plane, ``r = 1 / sqrt(mean(x**2) + eps)``, ``y = max(x * r*w + b, tau)`` or
  ``act(x * r*w + b)``. Backward: ``dx = k1 * dz - k2 * x`` with ``k1 = r * w``,
  ``k2 = r**3 * w * sum(dz * x) / L``.
* ``evo_b0_*``: per plane mean and variance, merged per channel into the batch variance;
  ``y = x / max(s_b, v * x + s_i) * w + b``. Backward: per plane ``E_r = sum(e * [right])``,
  per channel ``F = sum(e * [left])`` (``e = -g * w * x / d**2``), then
  ``dx = g * w / d + v * e_r + k * x - k0`` (``k``, ``k0`` per plane).
* ``evo_s0_*``: per group of ``K`` channels (contiguous ``K * L`` values) mean and variance;
  ``y = x * sigmoid(v * x) * (w / s_g) + b``. Backward: per channel ``sum(g * a)``,
  ``sum(g * x**2 * s * (1 - s))``, ``sum(g)``; ``dx = q * a' - pull * (x - mean_g)``.
* ``grn_*``: per plane (ncl) or per sample's column (nlc) ``gx = sqrt(sum(x**2))``; per
  sample ``nx = gx / (mean_c(gx) + eps)``; ``y = x * (1 + w * nx) + b``. Backward:
  ``dx = g * (1 + w * nx) + x * k`` with ``k = dgx / gx`` per plane.
* ``rms2d_*`` (ncl): per sample and tile of ``TILE`` positions, ``r[l] = 1 / sqrt(mean_c(x**2)
  + eps)``, ``y = x * r[l] * w[c]``; backward ``dx = r * (g * w - x * r**2 * S[l] / C)``,
  ``S[l] = sum_c(g * w * x)``. (Channels-last input is the row kernel of RMSNorm.)
"""

from __future__ import annotations

import numpy as np
from numba import prange

from normkit.kernels._activations import exp_fast
from normkit.kernels._common import (
    BLOCK,
    IDENTITY,
    MIN_CHUNK,
    ROW_BLOCK,
    affine_act,
    chunk_bounds,
    grad_apply,
    grad_sums,
    shift_of,
)
from normkit.kernels._common import shifted_sums as _shifted_sums
from normkit.kernels._jit import entry, kernel
from normkit.kernels.row_norm import _or_const

TILE = 256  # positions per rms2d task: C x TILE values stay in L2 between the two passes

# ---------------------------------------------------------------------------------------
# Shared loops.


@kernel(inline=True)
def _sum_squares(seg):
    """``sum(x**2)`` in float64 over typed blocks."""
    s = 0.0
    start = 0
    n = seg.shape[0]
    while start < n:
        blk = seg[start : min(n, start + BLOCK)]
        a = seg.dtype.type(0)
        for i in range(blk.shape[0]):
            a += blk[i] * blk[i]
        s += a
        start += BLOCK
    return s


@kernel(inline=True)
def _sum_product(u, v):
    """``(sum(u * v), sum(u))`` in float64 over typed blocks."""
    s1 = 0.0
    s2 = 0.0
    start = 0
    n = u.shape[0]
    while start < n:
        stop = min(n, start + BLOCK)
        a1 = u.dtype.type(0)
        a2 = u.dtype.type(0)
        for i in range(start, stop):
            a1 += u[i] * v[i]
            a2 += u[i]
        s1 += a1
        s2 += a2
        start = stop
    return s1, s2


@kernel
def _plane_moments(x, bounds, mean_out, var_out):
    """Mean and biased variance of each plane (shifted sums; NaN stays NaN)."""
    _plane_moments_parallel(x.reshape(-1, x.shape[2]), bounds, mean_out, var_out)


@kernel(parallel=True)
def _plane_moments_parallel(planes, bounds, mean_out, var_out):
    L = planes.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            seg = planes[j]
            k = seg.dtype.type(shift_of(seg))
            s1, s2 = _shifted_sums(seg, k)
            d = s1 / L
            var = s2 / L - d * d
            if var < 0.0:
                var = 0.0
            mean_out[j] = k + d
            var_out[j] = var


# ---------------------------------------------------------------------------------------
# FilterResponseNorm.


@kernel(inline=True)
def _tlu_apply(src, dst, a, b, tau):
    """``dst = max(src * a + b, tau)``, NaN-propagating as torch.maximum."""
    for i in range(src.shape[0]):
        z = src[i] * a + b
        dst[i] = tau if tau > z else (z if z >= tau else z + tau)


@kernel(inline=True)
def _tlu_grad_sums(g, x, a, b, tau):
    """``(sum dz * x, sum dz, sum g - dz)`` with ``dz = g * share_z`` (torch.maximum's split:
    1 above tau, 1/2 at tau, 0 below)."""
    z0 = x.dtype.type(0)
    half = x.dtype.type(0.5)
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    start = 0
    n = x.shape[0]
    while start < n:
        stop = min(n, start + BLOCK)
        a1 = z0
        a2 = z0
        a3 = z0
        for i in range(start, stop):
            z = x[i] * a + b
            dz = z0 if z < tau else (g[i] * half if z == tau else g[i])
            dt = z0 if z > tau else (g[i] * half if z == tau else g[i])
            a1 += dz * x[i]
            a2 += dz
            a3 += dt
        s1 += a1
        s2 += a2
        s3 += a3
        start = stop
    return s1, s2, s3


@kernel(inline=True)
def _tlu_grad_apply(g, x, dx, a, b, tau, k1, k2):
    z0 = x.dtype.type(0)
    half = x.dtype.type(0.5)
    for i in range(x.shape[0]):
        z = x[i] * a + b
        dz = z0 if z < tau else (g[i] * half if z == tau else g[i])
        dx[i] = k1 * dz - k2 * x[i]


@kernel
def _act_grad_sums(g, x, a, b, act, slope):
    """``(sum dz, sum dz * x)``, ``dz = g * act'(x * a + b)`` (a call, not inlined into the
    parallel loop: Numba's inliner trips over the activation overloads inside a prange)."""
    return grad_sums(g, x, x.dtype.type(0), a, b, act, slope)


@kernel
def _act_grad_apply(g, x, dx, k1, k2, a, b, act, slope):
    """``dx = k1 * dz - k2 * x``, ``dz = g * act'(x * a + b)``."""
    zero = x.dtype.type(0)
    grad_apply(g, x, dx, zero, k1, k2, zero, a, b, act, slope)


@kernel(parallel=True)
def _frn_forward(x, y, w, b, tau, eps, act, slope, bounds, rstd):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            r = 1.0 / np.sqrt(_sum_squares(x[n, c]) / L + eps)
            rstd[j] = r
            a = x.dtype.type(r * w[c])
            if tau.shape[0] > 0:
                _tlu_apply(x[n, c], y[n, c], a, b[c], tau[c])
            else:
                affine_act(x[n, c], y[n, c], x.dtype.type(0), a, b[c], act, slope)


@kernel(parallel=True)
def _frn_backward(g, x, dx, w, b, tau, rstd, act, slope, bounds, sdx, sdz, stau):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            r = rstd[j]
            a = x.dtype.type(r * w[c])
            if tau.shape[0] > 0:
                s_dzx, s_dz, s_t = _tlu_grad_sums(g[n, c], x[n, c], a, b[c], tau[c])
            else:
                s_dz, s_dzx = _act_grad_sums(g[n, c], x[n, c], a, b[c], act, slope)
                s_t = 0.0
            sdx[j] = s_dzx * r
            sdz[j] = s_dz
            stau[j] = s_t
            k1 = x.dtype.type(r * w[c])
            k2 = x.dtype.type(r * r * r * w[c] * s_dzx / L)
            if tau.shape[0] > 0:
                _tlu_grad_apply(g[n, c], x[n, c], dx[n, c], a, b[c], tau[c], k1, k2)
            else:
                _act_grad_apply(g[n, c], x[n, c], dx[n, c], k1, k2, a, b[c], act, slope)


@kernel
def _per_channel_sum(parts, C, out):
    """``out[c] = sum_n parts[n * C + c]``."""
    for c in range(C):
        s = 0.0
        for n in range(parts.shape[0] // C):
            s += parts[n * C + c]
        out[c] = s


_X = "{t}[:, :, ::1]"
_V = "{t}[::1]"
_F = "float64[::1]"


@entry(ncl=f"void({_X}, {_X}, {_V}, {_V}, {_V}, float64, int64, float64, {_F}, int64)")
def frn_forward(x, y, w, b, tau, eps, act, slope, rstd_out, threads):
    """FilterResponseNorm forward; ``tau`` of length 0: ``act`` instead of the TLU;
    ``rstd_out (N * C,)``: ``1 / sqrt(mean(x**2) + eps)`` per plane."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * C, L, threads, 1)
    ww = _or_const(w, C, 1.0, x)
    bb = _or_const(b, C, 0.0, x)
    _frn_forward(x, y, ww, bb, tau, eps, act, x.dtype.type(slope), bounds, rstd_out)


@entry(
    ncl=f"void({_X}, {_X}, {_X}, {_V}, {_V}, {_V}, {_F}, int64, float64, {_V}, {_V}, {_V}, int64)"
)
def frn_backward(g, x, dx, w, b, tau, rstd, act, slope, dw_out, db_out, dtau_out, threads):
    """FilterResponseNorm backward: ``dx``, ``dw = sum(dz * x * r)``, ``db = sum(dz)``,
    ``dtau = sum(g * share_tau)`` (zeros without tau)."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * C, L, threads, 1)
    ww = _or_const(w, C, 1.0, x)
    bb = _or_const(b, C, 0.0, x)
    sdx = np.empty(N * C)
    sdz = np.empty(N * C)
    stau = np.empty(N * C)
    _frn_backward(g, x, dx, ww, bb, tau, rstd, act, x.dtype.type(slope), bounds, sdx, sdz, stau)
    acc = np.empty(C)
    _per_channel_sum(sdx, C, acc)
    for c in range(C):
        dw_out[c] = acc[c]
    _per_channel_sum(sdz, C, acc)
    for c in range(C):
        db_out[c] = acc[c]
    _per_channel_sum(stau, C, acc)
    for c in range(C):
        dtau_out[c] = acc[c]


# ---------------------------------------------------------------------------------------
# EvoNorm-B0.


@kernel(parallel=True)
def _evo_b0_apply(x, y, v, w, b, s_b, s_i, bounds):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            src = x[n, c]
            dst = y[n, c]
            left = x.dtype.type(s_b[c])
            si = x.dtype.type(s_i[j])
            vc = v[c]
            wc = w[c]
            bc = b[c]
            for i in range(L):
                right = src[i] * vc + si
                d = left if left > right else (right if right >= left else left + right)
                dst[i] = src[i] / d * wc + bc


@kernel(parallel=True)
def _evo_b0_grad_sums(g, x, v, w, s_b, s_i, bounds, e_r, e_l, dv, dw, db):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            gs = g[n, c]
            xs = x[n, c]
            left = x.dtype.type(s_b[c])
            si = x.dtype.type(s_i[j])
            vc = v[c]
            wc = w[c]
            zero = x.dtype.type(0)
            half = x.dtype.type(0.5)
            er = 0.0
            el = 0.0
            sv = 0.0
            sw = 0.0
            sb = 0.0
            start = 0
            while start < L:
                stop = min(L, start + BLOCK)
                a_er = zero
                a_el = zero
                a_v = zero
                a_w = zero
                a_b = zero
                for i in range(start, stop):
                    right = xs[i] * vc + si
                    d = left if left > right else (right if right >= left else left + right)
                    e = -(gs[i] * wc) * xs[i] / (d * d)
                    to_r = zero if right < left else (half if right == left else x.dtype.type(1))
                    to_l = zero if left < right else (half if right == left else x.dtype.type(1))
                    a_er += e * to_r
                    a_el += e * to_l
                    a_v += e * to_r * xs[i]
                    a_w += gs[i] * xs[i] / d
                    a_b += gs[i]
                er += a_er
                el += a_el
                sv += a_v
                sw += a_w
                sb += a_b
                start = stop
            e_r[j] = er
            e_l[j] = el
            dv[j] = sv
            dw[j] = sw
            db[j] = sb


@kernel(parallel=True)
def _evo_b0_grad_apply(g, x, dx, v, w, s_b, s_i, kx, k0, bounds):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            gs = g[n, c]
            xs = x[n, c]
            out = dx[n, c]
            left = x.dtype.type(s_b[c])
            si = x.dtype.type(s_i[j])
            vc = v[c]
            wc = w[c]
            k = x.dtype.type(kx[j])
            kk = x.dtype.type(k0[j])
            zero = x.dtype.type(0)
            half = x.dtype.type(0.5)
            for i in range(L):
                right = xs[i] * vc + si
                d = left if left > right else (right if right >= left else left + right)
                h = gs[i] * wc
                to_r = zero if right < left else (half if right == left else x.dtype.type(1))
                e = -h * xs[i] / (d * d)
                out[i] = h / d + vc * e * to_r + k * xs[i] - kk


@kernel
def _evo_b0_plane_std(plane_var, eps):
    s = np.empty(plane_var.shape[0])
    for j in range(plane_var.shape[0]):
        s[j] = np.sqrt(plane_var[j] + eps)
    return s


@entry(
    ncl=f"void({_X}, {_X}, {_V}, {_V}, {_V}, {_F}, boolean, float64, {_F}, {_F}, {_F}, {_F}, int64)"
)
def evo_b0_forward(
    x, y, v, w, b, running_var, training, eps, plane_mean, plane_var, batch_mean, batch_var,
    threads,
):  # fmt: skip
    """EvoNorm-B0 forward. Training: per-plane and per-channel (batch) mean and variance
    into the outputs; evaluation: ``batch_var = running_var`` (``batch_mean`` zeros)."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * C, L, threads, 1)
    _plane_moments(x, bounds, plane_mean, plane_var)
    for c in range(C):
        if training:
            m = 0.0
            for n in range(N):
                m += plane_mean[n * C + c]
            m /= N
            m2 = 0.0
            for n in range(N):
                d = plane_mean[n * C + c] - m
                m2 += plane_var[n * C + c] + d * d
            batch_mean[c] = m
            batch_var[c] = m2 / N
        else:
            batch_mean[c] = 0.0
            batch_var[c] = running_var[c]
    s_b = _evo_b0_plane_std(batch_var, eps)
    s_i = _evo_b0_plane_std(plane_var, eps)
    ww = _or_const(w, C, 1.0, x)
    bb = _or_const(b, C, 0.0, x)
    _evo_b0_apply(x, y, v, ww, bb, s_b, s_i, bounds)


@entry(
    ncl=f"void({_X}, {_X}, {_X}, {_V}, {_V}, {_F}, {_F}, {_F}, {_F}, boolean, float64, {_V}, "
    f"{_V}, {_V}, int64)"
)
def evo_b0_backward(
    g, x, dx, v, w, plane_mean, plane_var, batch_mean, batch_var, training, eps, dv_out,
    dw_out, db_out, threads,
):  # fmt: skip
    """EvoNorm-B0 backward: ``dx`` (through the batch variance in training), ``dv``,
    ``dw``, ``db``."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * C, L, threads, 1)
    ww = _or_const(w, C, 1.0, x)
    s_b = _evo_b0_plane_std(batch_var, eps)
    s_i = _evo_b0_plane_std(plane_var, eps)
    e_r = np.empty(N * C)
    e_l = np.empty(N * C)
    pv = np.empty(N * C)
    pw = np.empty(N * C)
    pb = np.empty(N * C)
    _evo_b0_grad_sums(g, x, v, ww, s_b, s_i, bounds, e_r, e_l, pv, pw, pb)
    f = np.empty(C)
    _per_channel_sum(e_l, C, f)
    kx = np.empty(N * C)
    k0 = np.empty(N * C)
    for j in range(N * C):
        c = j % C
        ki = e_r[j] / (s_i[j] * L)
        kb = f[c] / (s_b[c] * N * L) if training else 0.0
        kx[j] = ki + kb
        k0[j] = ki * plane_mean[j] + kb * batch_mean[c]
    _evo_b0_grad_apply(g, x, dx, v, ww, s_b, s_i, kx, k0, bounds)
    acc = np.empty(C)
    _per_channel_sum(pv, C, acc)
    for c in range(C):
        dv_out[c] = acc[c]
    _per_channel_sum(pw, C, acc)
    for c in range(C):
        dw_out[c] = acc[c]
    _per_channel_sum(pb, C, acc)
    for c in range(C):
        db_out[c] = acc[c]


# ---------------------------------------------------------------------------------------
# EvoNorm-S0 / S0a.


@kernel(parallel=True)
def _evo_s0_forward(x, y, G, v, w, b, eps, gated, bounds, mean_out, var_out):
    C = x.shape[1]
    L = x.shape[2]
    K = C // G
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // G
            c0 = (j - n * G) * K
            block = x[n, c0 : c0 + K].reshape(-1)
            k = x.dtype.type(shift_of(block))
            s1, s2 = _shifted_sums(block, k)
            cnt = K * L
            d = s1 / cnt
            var = s2 / cnt - d * d
            if var < 0.0:
                var = 0.0
            mean_out[j] = k + d
            var_out[j] = var
            inv = 1.0 / np.sqrt(var + eps)
            one = x.dtype.type(1)
            for c in range(c0, c0 + K):
                a = x.dtype.type(w[c] * inv)
                bc = b[c]
                src = x[n, c]
                dst = y[n, c]
                if gated:
                    vc = v[c]
                    for i in range(L):
                        s = one / (one + exp_fast(-(vc * src[i])))
                        dst[i] = src[i] * s * a + bc
                else:
                    for i in range(L):
                        dst[i] = src[i] * a + bc


@kernel(parallel=True)
def _evo_s0_backward(g, x, dx, G, v, w, eps, gated, bounds, mean, var, pa, pv, pb):
    C = x.shape[1]
    L = x.shape[2]
    K = C // G
    cnt = K * L
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // G
            c0 = (j - n * G) * K
            inv = 1.0 / np.sqrt(var[j] + eps)
            one = x.dtype.type(1)
            zero = x.dtype.type(0)
            pull = 0.0
            for c in range(c0, c0 + K):
                gs = g[n, c]
                xs = x[n, c]
                sa = 0.0
                sv = 0.0
                sb = 0.0
                start = 0
                while start < L:
                    stop = min(L, start + BLOCK)
                    a1 = zero
                    a2 = zero
                    a3 = zero
                    if gated:
                        vc = v[c]
                        for i in range(start, stop):
                            s = one / (one + exp_fast(-(vc * xs[i])))
                            a1 += gs[i] * xs[i] * s
                            a2 += gs[i] * xs[i] * xs[i] * s * (one - s)
                            a3 += gs[i]
                    else:
                        for i in range(start, stop):
                            a1 += gs[i] * xs[i]
                            a3 += gs[i]
                    sa += a1
                    sv += a2
                    sb += a3
                    start = stop
                pa[n * C + c] = sa
                pv[n * C + c] = sv
                pb[n * C + c] = sb
                pull += w[c] * sa
            # dx = q * a' - pull * (x - mean) with q = g * w / s_g
            kp = x.dtype.type(pull * inv * inv * inv / cnt)
            m = x.dtype.type(mean[j])
            lo = x.dtype.type(mean[j] - m)
            for c in range(c0, c0 + K):
                q = x.dtype.type(w[c] * inv)
                gs = g[n, c]
                xs = x[n, c]
                out = dx[n, c]
                if gated:
                    vc = v[c]
                    for i in range(L):
                        s = one / (one + exp_fast(-(vc * xs[i])))
                        da = s + vc * xs[i] * s * (one - s)
                        out[i] = gs[i] * q * da - kp * ((xs[i] - m) - lo)
                else:
                    for i in range(L):
                        out[i] = gs[i] * q - kp * ((xs[i] - m) - lo)


@entry(ncl=f"void({_X}, {_X}, int64, {_V}, {_V}, {_V}, float64, {_F}, {_F}, int64)")
def evo_s0_forward(x, y, G, v, w, b, eps, mean_out, var_out, threads):
    """EvoNorm-S0 forward (``v`` of length 0: no gate); ``mean_out``/``var_out (N * G,)``."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * G, (C // G) * L, threads, 1)
    ww = _or_const(w, C, 1.0, x)
    bb = _or_const(b, C, 0.0, x)
    _evo_s0_forward(x, y, G, v, ww, bb, eps, v.shape[0] > 0, bounds, mean_out, var_out)


@entry(
    ncl=f"void({_X}, {_X}, {_X}, int64, {_V}, {_V}, {_F}, {_F}, float64, {_V}, {_V}, {_V}, int64)"
)
def evo_s0_backward(g, x, dx, G, v, w, mean, var, eps, dv_out, dw_out, db_out, threads):
    """EvoNorm-S0 backward: ``dx``, ``dv`` (zeros without v), ``dw``, ``db``."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * G, (C // G) * L, threads, 1)
    ww = _or_const(w, C, 1.0, x)
    pa = np.empty(N * C)
    pv = np.empty(N * C)
    pb = np.empty(N * C)
    gated = v.shape[0] > 0
    _evo_s0_backward(g, x, dx, G, v, ww, eps, gated, bounds, mean, var, pa, pv, pb)
    K = C // G
    for c in range(C):
        sw = 0.0
        sv = 0.0
        sb = 0.0
        for n in range(N):
            inv = 1.0 / np.sqrt(var[n * G + c // K] + eps)
            sw += pa[n * C + c] * inv
            sv += pv[n * C + c] * inv
            sb += pb[n * C + c]
        dw_out[c] = sw
        dv_out[c] = sv * ww[c] if gated else 0.0
        db_out[c] = sb


# ---------------------------------------------------------------------------------------
# GlobalResponseNorm.


@kernel(parallel=True)
def _plane_norms(planes, bounds, out):
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            out[j] = np.sqrt(_sum_squares(planes[j]))


@kernel(parallel=True)
def _plane_affine(x, y, a, b, bounds):
    """``y[n, c] = x[n, c] * a[n * C + c] + b[c]``."""
    C = x.shape[1]
    zero = x.dtype.type(0)
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            affine_act(x[n, c], y[n, c], zero, x.dtype.type(a[j]), b[c], IDENTITY, zero)


@kernel(parallel=True)
def _plane_grad_sums(g, x, bounds, s_gx, s_g):
    """``sum(g * x)`` and ``sum(g)`` of each plane."""
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            s_gx[j], s_g[j] = _sum_product(g[n, c], x[n, c])


@kernel(parallel=True)
def _plane_grad(g, x, dx, a1, k, bounds):
    """``dx[n, c] = g[n, c] * a1[j] + x[n, c] * k[j]``."""
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        for j in range(bounds[t], bounds[t + 1]):
            n = j // C
            c = j - n * C
            gs = g[n, c]
            xs = x[n, c]
            out = dx[n, c]
            an = x.dtype.type(a1[j])
            kn = x.dtype.type(k[j])
            for i in range(L):
                out[i] = gs[i] * an + xs[i] * kn


@kernel
def _sample_bounds(N, L, C, threads):
    """Chunks of whole rows of ``(N * L, C)`` that never straddle two samples: one per
    sample, or (fewer samples than threads) each sample split in up to ``threads // N``."""
    per = 1
    if N < threads:
        per = max(1, min(threads // N, L * C // MIN_CHUNK))
    bounds = np.empty(N * per + 1, np.int64)
    for n in range(N):
        for p in range(per):
            bounds[n * per + p] = n * L + (p * L) // per
    bounds[N * per] = N * L
    return bounds, per


@kernel(parallel=True)
def _column_sums(x, g, square, bounds, parts_1, parts_2):
    """Per chunk of rows of ``x (R, C)``: per column ``sum(x**2)`` (``square``; ``parts_2``
    untouched) or ``sum(g * x)`` and ``sum(g)``, typed blocks of ``ROW_BLOCK`` rows."""
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        blk1 = np.empty(C, x.dtype)
        blk2 = np.empty(C, x.dtype)
        acc1 = np.zeros(C)
        acc2 = np.zeros(C)
        r = bounds[t]
        hi = bounds[t + 1]
        while r < hi:
            stop = min(hi, r + ROW_BLOCK)
            for i in range(C):
                blk1[i] = 0
                blk2[i] = 0
            if square:
                for rr in range(r, stop):
                    xr = x[rr]
                    for i in range(C):
                        blk1[i] += xr[i] * xr[i]
            else:
                for rr in range(r, stop):
                    xr = x[rr]
                    gr = g[rr]
                    for i in range(C):
                        blk1[i] += gr[i] * xr[i]
                        blk2[i] += gr[i]
            for i in range(C):
                acc1[i] += blk1[i]
                acc2[i] += blk2[i]
            r = stop
        for i in range(C):
            parts_1[t, i] = acc1[i]
            parts_2[t, i] = acc2[i]


@kernel
def _sample_column_sums(rows, g, square, N, threads, out_1, out_2):
    """Column sums of each sample's rows of ``rows (N * L, C)`` into ``(N, C)`` arrays."""
    C = rows.shape[1]
    L = rows.shape[0] // N
    bounds, per = _sample_bounds(N, L, C, threads)
    parts_1 = np.empty((N * per, C))
    parts_2 = np.empty((N * per, C))
    _column_sums(rows, g, square, bounds, parts_1, parts_2)
    for n in range(N):
        for i in range(C):
            s1 = 0.0
            s2 = 0.0
            for p in range(per):
                s1 += parts_1[n * per + p, i]
                s2 += parts_2[n * per + p, i]
            out_1[n, i] = s1
            out_2[n, i] = s2


@kernel(parallel=True)
def _rows_affine(x, y, a, b, L, bounds):
    """``y[r] = x[r] * a[n] + b`` for the rows ``r`` of sample ``n = r // L``."""
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            xr = x[r]
            out = y[r]
            an = a[r // L]
            for i in range(C):
                out[i] = xr[i] * an[i] + b[i]


@kernel(parallel=True)
def _rows_grad(g, x, dx, a1, k, L, bounds):
    """``dx[r] = g[r] * a1[n] + x[r] * k[n]`` for the rows ``r`` of sample ``n = r // L``."""
    C = x.shape[1]
    for t in prange(bounds.shape[0] - 1):
        for r in range(bounds[t], bounds[t + 1]):
            gr = g[r]
            xr = x[r]
            out = dx[r]
            an = a1[r // L]
            kn = k[r // L]
            for i in range(C):
                out[i] = gr[i] * an[i] + xr[i] * kn[i]


@kernel
def _grn_coeffs(gx, w, eps, a_out):
    """``a = 1 + w * nx`` per ``(n, c)`` from the norms ``gx (N, C)``; returns ``D (N,)``."""
    N, C = gx.shape
    big_d = np.empty(N)
    for n in range(N):
        m = 0.0
        for c in range(C):
            m += gx[n, c]
        big_d[n] = m / C + eps
        for c in range(C):
            a_out[n, c] = 1.0 + w[c] * (gx[n, c] / big_d[n])
    return big_d


@kernel
def _grn_grad_coeffs(gx, w, eps, s_gx, s_g, a1, k, dw_out, db_out):
    """``dgx = w * A / D - sum_c(w * A * gx) / (C * D**2)``, ``k = dgx / gx`` (0 where
    ``gx == 0``), ``a1 = 1 + w * nx``; the parameter gradients."""
    N, C = gx.shape
    big_d = _grn_coeffs(gx, w, eps, a1)
    for c in range(C):
        dw_out[c] = 0.0
        db_out[c] = 0.0
    for n in range(N):
        d = big_d[n]
        t = 0.0
        for c in range(C):
            t += w[c] * s_gx[n, c] * gx[n, c]
        t /= C * d * d
        for c in range(C):
            dgx = w[c] * s_gx[n, c] / d - t
            k[n, c] = dgx / gx[n, c] if gx[n, c] > 0.0 else 0.0
            dw_out[c] += s_gx[n, c] * (gx[n, c] / d)
            db_out[c] += s_g[n, c]


@kernel
def _typed_copy(a, like):
    out = np.empty(a.shape, like.dtype)
    for n in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[n, c] = a[n, c]
    return out


_R = "{t}[:, ::1]"
_F2 = "float64[:, ::1]"


@entry(ncl=f"void({_X}, {_X}, {_V}, {_V}, float64, {_F2}, int64)")
def grn_forward(x, y, w, b, eps, gx_out, threads):
    """GlobalResponseNorm forward on ``x (N, C, L)``; ``gx_out (N, C)``: the L2 norms."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * C, L, threads, 1)
    _plane_norms(x.reshape(N * C, L), bounds, gx_out.reshape(-1))
    a = np.empty((N, C))
    _grn_coeffs(gx_out, _or_const(w, C, 0.0, x), eps, a)
    _plane_affine(x, y, a.reshape(-1), _or_const(b, C, 0.0, x), bounds)


@entry(ncl=f"void({_X}, {_X}, {_X}, {_V}, float64, {_F2}, {_V}, {_V}, int64)")
def grn_backward(g, x, dx, w, eps, gx, dw_out, db_out, threads):
    """GlobalResponseNorm backward on ``(N, C, L)``: ``dx``, ``dw``, ``db``."""
    N, C, L = x.shape
    bounds = chunk_bounds(N * C, L, threads, 1)
    s_gx = np.empty((N, C))
    s_g = np.empty((N, C))
    _plane_grad_sums(g, x, bounds, s_gx.reshape(-1), s_g.reshape(-1))
    a1 = np.empty((N, C))
    k = np.empty((N, C))
    dw = np.empty(C)
    db = np.empty(C)
    _grn_grad_coeffs(gx, _or_const(w, C, 0.0, x), eps, s_gx, s_g, a1, k, dw, db)
    _plane_grad(g, x, dx, a1.reshape(-1), k.reshape(-1), bounds)
    for c in range(C):
        dw_out[c] = dw[c]
        db_out[c] = db[c]


@entry(rows=f"void({_R}, {_R}, int64, {_V}, {_V}, float64, {_F2}, int64)")
def grn_forward_rows(x, y, N, w, b, eps, gx_out, threads):
    """GlobalResponseNorm forward on channels-last rows ``x (N * L, C)``."""
    C = x.shape[1]
    L = x.shape[0] // N
    squares = np.empty((N, C))
    _sample_column_sums(x, x, True, N, threads, squares, np.empty((N, C)))
    for n in range(N):
        for c in range(C):
            gx_out[n, c] = np.sqrt(squares[n, c])
    a = np.empty((N, C))
    _grn_coeffs(gx_out, _or_const(w, C, 0.0, x), eps, a)
    bounds = chunk_bounds(N * L, C, threads, 1)
    _rows_affine(x, y, _typed_copy(a, x), _or_const(b, C, 0.0, x), L, bounds)


@entry(rows=f"void({_R}, {_R}, {_R}, int64, {_V}, float64, {_F2}, {_V}, {_V}, int64)")
def grn_backward_rows(g, x, dx, N, w, eps, gx, dw_out, db_out, threads):
    """GlobalResponseNorm backward on channels-last rows ``(N * L, C)``."""
    C = x.shape[1]
    L = x.shape[0] // N
    s_gx = np.empty((N, C))
    s_g = np.empty((N, C))
    _sample_column_sums(x, g, False, N, threads, s_gx, s_g)
    a1 = np.empty((N, C))
    k = np.empty((N, C))
    dw = np.empty(C)
    db = np.empty(C)
    _grn_grad_coeffs(gx, _or_const(w, C, 0.0, x), eps, s_gx, s_g, a1, k, dw, db)
    bounds = chunk_bounds(N * L, C, threads, 1)
    _rows_grad(g, x, dx, _typed_copy(a1, x), _typed_copy(k, x), L, bounds)
    for c in range(C):
        dw_out[c] = dw[c]
        db_out[c] = db[c]


# ---------------------------------------------------------------------------------------
# RmsNorm2d (ncl): RMS over the channels at each position.


@kernel(parallel=True)
def _rms2d_forward(x, y, w, eps, tiles, bounds, rstd):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        acc = np.empty(TILE)
        blk = np.empty(TILE, x.dtype)
        rs = np.empty(TILE, x.dtype)
        for u in range(bounds[t], bounds[t + 1]):
            n = u // tiles
            l0 = (u - n * tiles) * TILE
            m = min(L, l0 + TILE) - l0
            for i in range(m):
                acc[i] = 0.0
            c = 0
            while c < C:
                stop = min(C, c + ROW_BLOCK)
                for i in range(m):
                    blk[i] = 0
                for cc in range(c, stop):
                    seg = x[n, cc, l0 : l0 + m]
                    for i in range(m):
                        blk[i] += seg[i] * seg[i]
                for i in range(m):
                    acc[i] += blk[i]
                c = stop
            for i in range(m):
                r = 1.0 / np.sqrt(acc[i] / C + eps)
                rstd[n, l0 + i] = r
                rs[i] = r
            for cc in range(C):
                seg = x[n, cc, l0 : l0 + m]
                out = y[n, cc, l0 : l0 + m]
                wc = w[cc]
                for i in range(m):
                    out[i] = seg[i] * rs[i] * wc


@kernel(parallel=True)
def _rms2d_backward(g, x, dx, w, rstd, tiles, bounds, dw_parts):
    C = x.shape[1]
    L = x.shape[2]
    for t in prange(bounds.shape[0] - 1):
        acc = np.empty(TILE)
        blk = np.empty(TILE, x.dtype)
        k1 = np.empty(TILE, x.dtype)
        k2 = np.empty(TILE, x.dtype)
        dw = np.zeros(C)
        for u in range(bounds[t], bounds[t + 1]):
            n = u // tiles
            l0 = (u - n * tiles) * TILE
            m = min(L, l0 + TILE) - l0
            for i in range(m):
                acc[i] = 0.0
                k1[i] = rstd[n, l0 + i]
            c = 0
            while c < C:
                stop = min(C, c + ROW_BLOCK)
                for i in range(m):
                    blk[i] = 0
                for cc in range(c, stop):
                    gs = g[n, cc, l0 : l0 + m]
                    xs = x[n, cc, l0 : l0 + m]
                    wc = w[cc]
                    s = x.dtype.type(0)
                    for i in range(m):
                        gx = gs[i] * xs[i]
                        blk[i] += gx * wc
                        s += gx * k1[i]
                    dw[cc] += s
                for i in range(m):
                    acc[i] += blk[i]
                c = stop
            for i in range(m):
                r = rstd[n, l0 + i]
                k2[i] = r * r * r * acc[i] / C
            for cc in range(C):
                gs = g[n, cc, l0 : l0 + m]
                xs = x[n, cc, l0 : l0 + m]
                out = dx[n, cc, l0 : l0 + m]
                wc = w[cc]
                for i in range(m):
                    out[i] = gs[i] * wc * k1[i] - xs[i] * k2[i]
        for cc in range(C):
            dw_parts[t, cc] = dw[cc]


@entry(ncl=f"void({_X}, {_X}, {_V}, float64, {_F2}, int64)")
def rms2d_forward(x, y, w, eps, rstd_out, threads):
    """RmsNorm2d forward on ``x (N, C, L)``; ``rstd_out (N, L)``."""
    N, C, L = x.shape
    tiles = (L + TILE - 1) // TILE
    bounds = chunk_bounds(N * tiles, C * TILE, threads, 1)
    _rms2d_forward(x, y, _or_const(w, C, 1.0, x), eps, tiles, bounds, rstd_out)


@entry(ncl=f"void({_X}, {_X}, {_X}, {_V}, {_F2}, {_V}, int64)")
def rms2d_backward(g, x, dx, w, rstd, dw_out, threads):
    """RmsNorm2d backward: ``dx`` and ``dw = sum(g * x * r)``."""
    N, C, L = x.shape
    tiles = (L + TILE - 1) // TILE
    bounds = chunk_bounds(N * tiles, C * TILE, threads, 1)
    dw_parts = np.empty((bounds.shape[0] - 1, C))
    _rms2d_backward(g, x, dx, _or_const(w, C, 1.0, x), rstd, tiles, bounds, dw_parts)
    for c in range(C):
        s = 0.0
        for t in range(dw_parts.shape[0]):
            s += dw_parts[t, c]
        dw_out[c] = s


KERNELS = {
    "frn_forward": frn_forward,
    "frn_backward": frn_backward,
    "evo_b0_forward": evo_b0_forward,
    "evo_b0_backward": evo_b0_backward,
    "evo_s0_forward": evo_s0_forward,
    "evo_s0_backward": evo_s0_backward,
    "grn_forward": grn_forward,
    "grn_backward": grn_backward,
    "grn_forward_rows": grn_forward_rows,
    "grn_backward_rows": grn_backward_rows,
    "rms2d_forward": rms2d_forward,
    "rms2d_backward": rms2d_backward,
}
