"""Per-channel coefficient math of the batch-norm kernels (serial, float64): statistics
from shifted sums, ``invstd``, and the coefficients of the elementwise passes."""

from __future__ import annotations

import numpy as np

from normkit.kernels._jit import kernel


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
