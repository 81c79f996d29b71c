"""The BatchNorm variants written as their papers state them, in NumPy.

Companion of :mod:`normkit.reference` (whose BatchNorm functions these build on): the page
to read for what batch renormalization, ghost batches, frozen BN, fused activations and
synchronized statistics compute, and the oracle the layers are tested against. Nothing is
optimised; inputs are never modified; arrays are ``(N, C, *)`` with per-channel ``(C,)``
parameters, computed in the input dtype.
"""

from __future__ import annotations

import math

import numpy as np

from normkit.reference import (
    _channel_axes,
    _per_channel,
    _scale_shift,
    batch_norm_eval,
    batch_norm_train,
    batch_norm_train_backward,
)

Array = np.ndarray

# ---------------------------------------------------------------------------------------
# Batch renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch
# Dependence in Batch-Normalized Models", Algorithm 1).


def renorm_limits(step: int, rmax: float, dmax: float, warmup_steps: int):
    """``(rmax_t, dmax_t)`` at training step ``step``: linear ramp from ``(1, 0)`` over
    ``warmup_steps`` steps (fixed limits when ``warmup_steps == 0``)."""
    if warmup_steps == 0:
        return rmax, dmax
    t = min(step / warmup_steps, 1.0)
    return 1.0 + (rmax - 1.0) * t, dmax * t


def batch_renorm_train(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    rmax: float = 3.0,
    dmax: float = 5.0,
    eps: float = 1e-5,
):
    """Training forward, Algorithm 1 of the paper, with ``sigma = sqrt(running_var + eps)``::

        mu_B    = mean(x)                     sigma_B = sqrt(mean((x - mu_B)**2) + eps)
        r       = clip(sigma_B / sigma, 1/rmax, rmax)        # stop_gradient
        d       = clip((mu_B - mu) / sigma, -dmax, dmax)     # stop_gradient
        x_hat   = (x - mu_B) / sigma_B * r + d
        y       = gamma * x_hat + beta

    Returns ``(y, mu_B, var_B, r, d)``, the last four ``(C,)`` (``var_B`` biased).
    """
    axes = _channel_axes(x)
    m = np.prod([x.shape[a] for a in axes])
    mu_b = x.sum(axis=axes) / m
    var_b = ((x - _per_channel(mu_b, x)) ** 2).sum(axis=axes) / m
    sigma_b = np.sqrt(var_b + eps)
    sigma = np.sqrt(running_var + eps)
    r = np.clip(sigma_b / sigma, 1.0 / rmax, rmax)
    d = np.clip((mu_b - running_mean) / sigma, -dmax, dmax)
    x_hat = (x - _per_channel(mu_b, x)) / _per_channel(sigma_b, x) * _per_channel(
        r, x
    ) + _per_channel(d, x)
    y = _scale_shift(x_hat, gamma, beta, lambda v: _per_channel(v, x))
    return y, mu_b, var_b, r, d


def batch_renorm_train_backward(
    g: Array,
    x: Array,
    r: Array,
    d: Array,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """The paper's backward with ``r, d`` held constant, term by term (``m`` values per
    channel, ``g_xh = dL/dx_hat = g * gamma``)::

        dL/dsigma_B = sum(g_xh * (x - mu_B) * (-r / sigma_B**2))
        dL/dmu_B    = sum(g_xh * (-r / sigma_B))
        dL/dx       = g_xh * r / sigma_B + dL/dsigma_B * (x - mu_B) / (m * sigma_B) + dL/dmu_B / m
        dL/dgamma   = sum(g * x_hat);   dL/dbeta = sum(g)

    Returns ``(dx, dgamma, dbeta)`` (None where the parameter is absent).
    """
    axes = _channel_axes(x)
    m = np.prod([x.shape[a] for a in axes])
    mu_b = x.sum(axis=axes) / m
    centered = x - _per_channel(mu_b, x)
    sigma_b = np.sqrt((centered**2).sum(axis=axes) / m + eps)
    g_xh = g * _per_channel(gamma, x) if gamma is not None else g
    r_, s_ = _per_channel(r, x), _per_channel(sigma_b, x)
    d_sigma = (g_xh * centered * (-r_ / s_**2)).sum(axis=axes)
    d_mu = (g_xh * (-r_ / s_)).sum(axis=axes)
    dx = g_xh * r_ / s_ + _per_channel(d_sigma, x) * centered / (m * s_) + _per_channel(d_mu, x) / m
    x_hat = centered / s_ * r_ + _per_channel(d, x)
    dgamma = (g * x_hat).sum(axis=axes) if gamma is not None else None
    dbeta = g.sum(axis=axes) if has_beta else None
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------
# Ghost batch normalization (Hoffer et al. 2017, "Train longer, generalize better").


def ghost_batch_sizes(n: int, virtual_batch_size: int, values_per_sample: int = 1) -> list[int]:
    """Full ghost batches of ``virtual_batch_size`` samples, then the remainder; a remainder
    of a single value per channel joins the previous ghost batch."""
    sizes = []
    start = 0
    while start < n:
        sizes.append(min(virtual_batch_size, n - start))
        start += sizes[-1]
    if len(sizes) > 1 and sizes[-1] * values_per_sample == 1:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def ghost_batch_norm_train(
    x: Array,
    virtual_batch_size: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
):
    """Each ghost batch normalized as BatchNorm on its own.

    Returns ``(y, batch_mean, batch_var_unbiased)`` where, over the ``k`` ghost batches of
    ``n_g`` values per channel (``n`` in all), ``batch_mean = sum(n_g mu_g) / n`` and
    ``batch_var_unbiased = sum(n_g var_g) / (n - k)`` (the pooled within-ghost variance:
    what the running statistics move towards).
    """
    per_sample = math.prod(x.shape[2:])
    sizes = ghost_batch_sizes(x.shape[0], virtual_batch_size, per_sample)
    ys, sum_mean, sum_m2 = [], 0.0, 0.0
    start = 0
    for size in sizes:
        y, mean, var = batch_norm_train(x[start : start + size], gamma, beta, eps)
        ys.append(y)
        values = size * per_sample
        sum_mean = sum_mean + values * mean
        sum_m2 = sum_m2 + values * var
        start += size
    n = x.shape[0] * per_sample
    return np.concatenate(ys), sum_mean / n, sum_m2 / (n - len(sizes))


def ghost_batch_norm_train_backward(
    g: Array,
    x: Array,
    virtual_batch_size: int,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Per ghost batch BatchNorm backward; ``dgamma``/``dbeta`` summed over ghost batches."""
    per_sample = math.prod(x.shape[2:])
    sizes = ghost_batch_sizes(x.shape[0], virtual_batch_size, per_sample)
    dxs, dgamma, dbeta = [], None, None
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        dx, dg, db = batch_norm_train_backward(g[part], x[part], gamma, eps, has_beta)
        dxs.append(dx)
        dgamma = dg if dgamma is None else dgamma + dg
        dbeta = db if dbeta is None else dbeta + db
        start += size
    return np.concatenate(dxs), dgamma, dbeta


# ---------------------------------------------------------------------------------------
# Frozen BatchNorm: inference folded into one scale and shift.


def frozen_batch_norm(x, weight, bias, running_mean, running_var, eps: float = 1e-5) -> Array:
    """``x * scale + shift`` with ``scale = weight / sqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale``: the same as :func:`batch_norm_eval`."""
    scale = weight / np.sqrt(running_var + eps)
    shift = bias - running_mean * scale
    return x * _per_channel(scale, x) + _per_channel(shift, x)


# ---------------------------------------------------------------------------------------
# BatchNorm followed by an activation.

_erf = np.vectorize(math.erf, otypes=[float])


def activation(x: Array, act: str, negative_slope: float = 0.01) -> Array:
    """relu, leaky_relu, silu (x * sigmoid(x)), gelu (x * Phi(x), exact) or identity."""
    if act == "relu":
        return np.maximum(x, 0.0).astype(x.dtype)
    if act == "leaky_relu":
        return np.where(x > 0, x, negative_slope * x)
    if act == "silu":
        return x / (1.0 + np.exp(-x))
    if act == "gelu":
        return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    if act == "identity":
        return x
    raise ValueError(f"unknown activation {act!r}")


def activation_derivative(x: Array, act: str, negative_slope: float = 0.01) -> Array:
    """``act'(x)``: relu 1[x>0]; leaky 1 or slope; silu s(1 + x(1-s)); gelu Phi + x phi."""
    if act == "relu":
        return (x > 0).astype(x.dtype)
    if act == "leaky_relu":
        return np.where(x > 0, 1.0, negative_slope)
    if act == "silu":
        s = 1.0 / (1.0 + np.exp(-x))
        return s * (1.0 + x * (1.0 - s))
    if act == "gelu":
        return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x**2) / math.sqrt(
            2 * math.pi
        )
    if act == "identity":
        return np.ones_like(x)
    raise ValueError(f"unknown activation {act!r}")


def batch_norm_act_train(x, gamma=None, beta=None, eps=1e-5, act="relu", negative_slope=0.01):
    """``act(BatchNorm(x))`` in training; returns ``(y, mean, var)``."""
    pre, mean, var = batch_norm_train(x, gamma, beta, eps)
    return activation(pre, act, negative_slope), mean, var


def batch_norm_act_train_backward(
    g, x, gamma=None, beta=None, eps=1e-5, act="relu", negative_slope=0.01, has_beta=True
):
    """Chain rule: BatchNorm's backward of ``g * act'(pre)``."""
    pre, _, _ = batch_norm_train(x, gamma, beta, eps)
    g_pre = g * activation_derivative(pre, act, negative_slope)
    return batch_norm_train_backward(g_pre, x, gamma, eps, has_beta)


def batch_norm_act_eval(
    x, running_mean, running_var, gamma=None, beta=None, eps=1e-5, act="relu", negative_slope=0.01
):
    """``act(BatchNorm(x))`` with running statistics."""
    pre = batch_norm_eval(x, running_mean, running_var, gamma, beta, eps)
    return activation(pre, act, negative_slope)


# ---------------------------------------------------------------------------------------
# Synchronized statistics: merging per-process moments (Chan, Golub, LeVeque 1979).


def merge_moments(counts, means, m2s):
    """Pairwise merge of ``(n_i, mean_i, M2_i)`` with ``M2 = sum((x - mean)**2)``::

        n = n_a + n_b;  delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n;  M2 = M2_a + M2_b + delta**2 * n_a * n_b / n

    Returns ``(n, mean, M2)``; the merged biased variance is ``M2 / n``.
    """
    n, mean, m2 = 0, np.zeros_like(means[0]), np.zeros_like(m2s[0])
    for n_b, mean_b, m2_b in zip(counts, means, m2s, strict=True):
        if n_b == 0:
            continue
        total = n + n_b
        delta = mean_b - mean
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + delta**2 * n * n_b / total
        n = total
    return n, mean, m2
