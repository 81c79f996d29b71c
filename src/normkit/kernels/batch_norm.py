"""Batch normalization entry points (``bn_*``), in two memory layouts.

* ``ncl``: ``x (N, C, L)`` C-contiguous; the passes are in :mod:`.batch_norm_ncl`.
* ``nlc``: ``x (R, C)`` rows with channels fastest (channels_last, BatchNorm1d on (N, C));
  the passes are in :mod:`.batch_norm_nlc`.

Statistics are one pass of shifted sums (shift = mean of the first <= 64 values of each
channel): ``mean = k + S1 / n``, ``var = S2 / n - (S1 / n)**2`` with float64 accumulation.
Elementwise passes compute ``act((x - m) * a + b)``; ``m`` is the mean rounded to the data
type and ``b`` absorbs the rounding residue, so a large mean (1e4 + N(0, 1)) costs no accuracy.
Backward (with ``dy = grad * act'(pre)`` and ``n`` values per channel)::

    sum_dy = sum(dy);  sum_dy_xhat = sum(dy * (x - mean)) * invstd
    dx = w * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)
       = k1 * dy - k2 * (x - m) - k3,   k1 = w * invstd,  k2 = k1 * invstd * sum_dy_xhat / n

Each driver is one Numba dispatch per operation; the ``moments``/``apply``/``grad_moments``/
``grad_apply_all`` stubs pick the layout's parallel pass by the rank of ``x`` at compile
time (3: ncl, 2: nlc).
"""

from __future__ import annotations

import numpy as np
from numba.extending import overload

from normkit.kernels._common import IDENTITY
from normkit.kernels._jit import entry
from normkit.kernels.batch_norm_coeffs import (
    _dy_xhat,
    _store,
    affine_coeffs,
    finish_stats,
    grad_coeffs,
    invstd_of,
)
from normkit.kernels.batch_norm_ncl import (
    _ncl_apply_all,
    _ncl_grad_apply_all,
    _ncl_grad_moments,
    _ncl_moments,
)
from normkit.kernels.batch_norm_nlc import (
    _nlc_apply_all,
    _nlc_backward_small,
    _nlc_forward_small,
    _nlc_grad_apply_all,
    _nlc_grad_moments,
    _nlc_moments,
    _no_backward_small,
    _no_forward_small,
)

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
