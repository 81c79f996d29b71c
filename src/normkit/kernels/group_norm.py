"""Group normalization kernels (instance norm is ``G = C``).

``x (N, C, L)`` C-contiguous, ``C = G * K``. Group ``(n, g)`` is the contiguous block
``x[n, g*K:(g+1)*K, :]`` of ``K * L`` values. With at least as many groups as threads, one
task per group does everything while the block is hot in cache:

* forward: shifted sums over the block (one read from memory), then, channel by channel,
  ``y = (x - mean) * rstd * w[c] + b[c]`` (second read from cache);
* backward: per channel ``sum g`` and ``sum g * (x - mean)`` (one read of ``g`` and ``x``),
  the group's ``A = sum w*g``, ``B = sum w*g*x_hat``, then
  ``dx = rstd * (w[c] * g - A / n - x_hat * B / n)`` (second read from cache); exactly 0
  for a group of one value (``n = 1``), whose output does not depend on ``x``.

With fewer groups than threads (GroupNorm(1) on one sample), the passes run instead as the
batch-norm layout kernels over flat views, split into one chunk per thread.
Parameter gradients ``dw[c] = sum_n rstd * sum g * (x - mean)``, ``db[c] = sum_n sum g``
are reduced serially from the per-``(n, c)`` sums.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from normkit.kernels._common import IDENTITY, affine_act, grad_apply, grad_sums, shift_of
from normkit.kernels._common import shifted_sums as _sums
from normkit.kernels._jit import entry, kernel
from normkit.kernels.batch_norm_ncl import (
    _ncl_apply_all,
    _ncl_grad_apply_all,
    _ncl_grad_moments,
    _ncl_moments,
)


@kernel
def _group_coeffs(mean, rstd, w, b, G, K, like):
    """Per ``(n, c)``: ``(mh, a, b')`` with ``y = (x - mh) * a + b'``."""
    NG = mean.shape[0]
    N = NG // G
    C = G * K
    mh = np.empty(N * C, like.dtype)
    a = np.empty(N * C, like.dtype)
    bb = np.empty(N * C, like.dtype)
    for n in range(N):
        for c in range(C):
            j = n * G + c // K
            m = mean[j]
            am = rstd[j] * (w[c] if w.shape[0] > 0 else 1.0)
            mh[n * C + c] = m
            lo = m - mh[n * C + c]
            a[n * C + c] = am
            bb[n * C + c] = (b[c] if b.shape[0] > 0 else 0.0) - lo * am
    return mh, a, bb


@kernel(parallel=True)
def _gn_forward_groups(x, y, G, w, b, eps, mean_out, var_out):
    N, C, L = x.shape
    K = C // G
    zero = x.dtype.type(0)
    for j in prange(N * G):
        n = j // G
        c0 = (j - n * G) * K
        block = x[n, c0 : c0 + K].reshape(-1)
        k = x.dtype.type(shift_of(block))
        s1, s2 = _sums(block, k)
        cnt = K * L
        d = s1 / cnt
        var = s2 / cnt - d * d
        if var < 0.0:
            var = 0.0
        mean = k + d
        mean_out[j] = mean
        var_out[j] = var
        rstd = 1.0 / np.sqrt(var + eps)
        mh = x.dtype.type(mean)
        lo = mean - mh
        for c in range(c0, c0 + K):
            am = rstd * (w[c] if w.shape[0] > 0 else 1.0)
            bc = (b[c] if b.shape[0] > 0 else 0.0) - lo * am
            affine_act(x[n, c], y[n, c], mh, x.dtype.type(am), x.dtype.type(bc), IDENTITY, zero)


@kernel
def _live(cnt):
    """0.0 for groups of one value, else 1.0: the factor of ``dx``'s coefficients. A group
    of one value outputs ``b[c]`` whatever ``x`` is, so ``dx`` is exactly 0; the general
    formula leaves ``rstd * w * g`` rounded two ways, up to an ulp of it (torch's kernel
    leaves as much, except with one channel, where it gives 0)."""
    return 0.0 if cnt == 1 else 1.0


@kernel(parallel=True)
def _gn_backward_groups(g, x, dx, G, w, mean, var, eps, sg, sgx):
    N, C, L = x.shape
    K = C // G
    zero = x.dtype.type(0)
    for j in prange(N * G):
        n = j // G
        c0 = (j - n * G) * K
        m = mean[j]
        rstd = 1.0 / np.sqrt(var[j] + eps)
        A = 0.0
        B = 0.0
        for c in range(c0, c0 + K):
            u, v = grad_sums(g[n, c], x[n, c], m, zero, zero, IDENTITY, zero)
            sg[n, c] = u
            sgx[n, c] = v
            wc = w[c] if w.shape[0] > 0 else 1.0
            A += wc * u
            B += wc * v * rstd
        cnt = K * L
        live = _live(cnt)
        k2 = x.dtype.type(live * rstd * B / cnt * rstd)
        k3 = x.dtype.type(live * rstd * A / cnt)
        for c in range(c0, c0 + K):
            k1 = x.dtype.type(live * rstd * (w[c] if w.shape[0] > 0 else 1.0))
            grad_apply(g[n, c], x[n, c], dx[n, c], m, k1, k2, k3, zero, zero, IDENTITY, zero)


_X = "{t}[:, :, ::1]"
_V = "{t}[::1]"


@entry(ncl=f"void({_X}, {_X}, int64, {_V}, {_V}, float64, {_V}, {_V}, int64)")
def gn_forward(x, y, G, w, b, eps, mean_out, var_out, threads):
    """GroupNorm forward; ``mean_out``/``var_out`` are ``(N * G,)``."""
    N, C, L = x.shape
    if N * G >= threads:
        _gn_forward_groups(x, y, G, w, b, eps, mean_out, var_out)
        return
    K = C // G
    shift, s1, s2 = _ncl_moments(x.reshape(1, N * G, K * L), threads)
    cnt = K * L
    mean = np.empty(N * G)
    rstd = np.empty(N * G)
    for j in range(N * G):
        d = s1[j] / cnt
        v = s2[j] / cnt - d * d
        if v < 0.0:  # rounding; NaN stays NaN
            v = 0.0
        mean[j] = shift[j] + d
        rstd[j] = 1.0 / np.sqrt(v + eps)
        mean_out[j] = mean[j]
        var_out[j] = v
    mh, a, bb = _group_coeffs(mean, rstd, w, b, G, K, x)
    _ncl_apply_all(x.reshape(1, N * C, L), y.reshape(1, N * C, L), mh, a, bb, IDENTITY,
                   x.dtype.type(0), threads)  # fmt: skip


@entry(ncl=f"void({_X}, {_X}, {_X}, int64, {_V}, {_V}, {_V}, float64, {_V}, {_V}, int64)")
def gn_backward(g, x, dx, G, w, mean, var, eps, dw_out, db_out, threads):
    """GroupNorm backward: ``dx``, ``dw = sum(g * x_hat)``, ``db = sum(g)`` per channel."""
    N, C, L = x.shape
    K = C // G
    rstd = np.empty(N * G)
    for j in range(N * G):
        rstd[j] = 1.0 / np.sqrt(var[j] + eps)
    if N * G >= threads:
        sg = np.empty((N, C))
        sgx = np.empty((N, C))
        _gn_backward_groups(g, x, dx, G, w, mean, var, eps, sg, sgx)
    else:
        zeros = np.zeros(N * C, x.dtype)
        mh = np.empty(N * C, x.dtype)
        for n in range(N):
            for c in range(C):
                mh[n * C + c] = mean[n * G + c // K]
        zero = x.dtype.type(0)
        flat_sg, flat_sgx = _ncl_grad_moments(
            g.reshape(1, N * C, L), x.reshape(1, N * C, L), mh, zeros, zeros, IDENTITY, zero,
            threads,
        )  # fmt: skip
        sg = flat_sg.reshape(N, C)
        sgx = flat_sgx.reshape(N, C)
        k1 = np.empty(N * C, x.dtype)
        k2 = np.empty(N * C, x.dtype)
        k3 = np.empty(N * C, x.dtype)
        cnt = K * L
        live = _live(cnt)
        for n in range(N):
            for gi in range(G):
                j = n * G + gi
                A = 0.0
                B = 0.0
                for c in range(gi * K, gi * K + K):
                    wc = w[c] if w.shape[0] > 0 else 1.0
                    A += wc * sg[n, c]
                    B += wc * sgx[n, c] * rstd[j]
                for c in range(gi * K, gi * K + K):
                    wc = w[c] if w.shape[0] > 0 else 1.0
                    k1[n * C + c] = live * rstd[j] * wc
                    k2[n * C + c] = live * rstd[j] * B / cnt * rstd[j]
                    k3[n * C + c] = live * rstd[j] * A / cnt
        _ncl_grad_apply_all(
            g.reshape(1, N * C, L), x.reshape(1, N * C, L), dx.reshape(1, N * C, L), mh,
            zeros, zeros, k1, k2, k3, IDENTITY, zero, threads,
        )  # fmt: skip
    for c in range(C):
        sw = 0.0
        sb = 0.0
        for n in range(N):
            sw += sgx[n, c] * rstd[n * G + c // K]
            sb += sg[n, c]
        dw_out[c] = sw
        db_out[c] = sb
