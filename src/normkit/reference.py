"""Normalization layers written as the formulas read, in NumPy.

This module is two things: the page a learner reads to see what each layer computes, and
the oracle the fast paths are tested against. Nothing here is optimised; every function
takes and returns NumPy arrays, never modifies its inputs, and computes in the input dtype.

Notation (per normalized group of ``n`` values; the group is a channel for BatchNorm, a
sample's features for LayerNorm, a sample's channel for InstanceNorm, a sample's group of
channels for GroupNorm)::

    mean   = sum(x) / n
    var    = sum((x - mean)**2) / n              # biased: used to normalize
    x_hat  = (x - mean) / sqrt(var + eps)
    y      = gamma * x_hat + beta                # learnable scale and shift

Backward, with ``g = dL/dy`` and ``g_hat = g * gamma``::

    dbeta  = sum(g)          dgamma = sum(g * x_hat)     (over everything but the channel)
    dx     = 1 / sqrt(var + eps) / n * (n * g_hat - sum(g_hat) - x_hat * sum(g_hat * x_hat))

RMSNorm drops the centering: ``mean`` is taken as 0, ``var`` is the mean square, and the
``sum(g_hat)`` term disappears from ``dx``.

Running statistics (BatchNorm in training; PyTorch's convention for ``momentum``)::

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)   # unbiased
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Array = np.ndarray


# ---------------------------------------------------------------------------------------
# The core: normalize over some axes, and its backward.


def normalize(x: Array, axes: tuple[int, ...], eps: float, center: bool = True):
    """``x_hat = (x - mean) / sqrt(var + eps)`` over ``axes``.

    Returns ``(x_hat, mean, var)``; ``mean``/``var`` keep the reduced axes (size 1).
    With ``center=False`` (RMSNorm): ``mean = 0`` and ``var = mean(x**2)``.
    """
    n = np.prod([x.shape[a] for a in axes])
    mean = x.sum(axis=axes, keepdims=True) / n if center else np.zeros_like(x, shape=(1,) * x.ndim)
    var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / n
    x_hat = (x - mean) / np.sqrt(var + eps)
    return x_hat, mean, var


def normalize_backward(
    g_hat: Array, x_hat: Array, var: Array, axes: tuple[int, ...], eps: float, center: bool = True
) -> Array:
    """``dx`` from ``g_hat = dL/dx_hat``: ``rstd / n * (n*g_hat - sum(g_hat) - x_hat*sum(g_hat*x_hat))``."""
    n = np.prod([x_hat.shape[a] for a in axes])
    rstd = 1.0 / np.sqrt(var + eps)
    sum_g = g_hat.sum(axis=axes, keepdims=True) if center else 0.0
    sum_g_xhat = (g_hat * x_hat).sum(axis=axes, keepdims=True)
    return rstd / n * (n * g_hat - sum_g - x_hat * sum_g_xhat)


def _channel_axes(x: Array) -> tuple[int, ...]:
    """Every axis but the channel axis 1: ``(0, 2, 3, ...)``."""
    return (0, *range(2, x.ndim))


def _per_channel(v: Array, x: Array) -> Array:
    """A ``(C,)`` vector shaped to broadcast against ``x (N, C, *)``."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _scale_shift(x_hat: Array, gamma: Array | None, beta: Array | None, shape_like) -> Array:
    y = x_hat
    if gamma is not None:
        y = y * shape_like(gamma)
    if beta is not None:
        y = y + shape_like(beta)
    return y


def _param_grads(g: Array, x_hat: Array, axes: tuple[int, ...], gamma, beta):
    dgamma = (g * x_hat).sum(axis=axes) if gamma is not None else None
    dbeta = g.sum(axis=axes) if beta is not None else None
    return dgamma, dbeta


# ---------------------------------------------------------------------------------------
# BatchNorm: statistics per channel over the batch and the spatial positions.


def batch_norm_train(
    x: Array, gamma: Array | None = None, beta: Array | None = None, eps: float = 1e-5
):
    """Training forward of BatchNorm on ``x (N, C, *)``.

    Returns ``(y, mean, var)`` with ``mean``/``var`` of shape ``(C,)`` (biased ``var``).
    """
    x_hat, mean, var = normalize(x, _channel_axes(x), eps)
    y = _scale_shift(x_hat, gamma, beta, lambda v: _per_channel(v, x))
    return y, mean.reshape(-1), var.reshape(-1)


def batch_norm_eval(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Inference forward: ``gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    x_hat = (x - _per_channel(running_mean, x)) / np.sqrt(_per_channel(running_var, x) + eps)
    return _scale_shift(x_hat, gamma, beta, lambda v: _per_channel(v, x))


def batch_norm_train_backward(
    g: Array, x: Array, gamma: Array | None = None, eps: float = 1e-5, has_beta: bool = True
):
    """Backward of :func:`batch_norm_train`: returns ``(dx, dgamma, dbeta)`` (None if absent)."""
    axes = _channel_axes(x)
    x_hat, _, var = normalize(x, axes, eps)
    g_hat = g * _per_channel(gamma, x) if gamma is not None else g
    dx = normalize_backward(g_hat, x_hat, var, axes, eps)
    dgamma, dbeta = _param_grads(g, x_hat, axes, gamma, True if has_beta else None)
    return dx, dgamma, dbeta


def batch_norm_eval_backward(
    g: Array,
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`batch_norm_eval`: the statistics are constants, ``dx = g*gamma*rstd``."""
    axes = _channel_axes(x)
    rstd = 1.0 / np.sqrt(_per_channel(running_var, x) + eps)
    x_hat = (x - _per_channel(running_mean, x)) * rstd
    dx = g * rstd * (_per_channel(gamma, x) if gamma is not None else 1.0)
    dgamma, dbeta = _param_grads(g, x_hat, axes, gamma, True if has_beta else None)
    return dx, dgamma, dbeta


def update_running_stats(
    running_mean: Array,
    running_var: Array,
    mean: Array,
    var: Array,
    n: int,
    momentum: float | None = 0.1,
    num_batches_tracked: int = 0,
):
    """One moving-average step; returns ``(running_mean, running_var, num_batches_tracked)``.

    ``var`` is the biased batch variance of ``n`` values per channel; the stored estimate is
    the unbiased ``var * n / (n - 1)``. ``momentum=None``: cumulative average with factor
    ``1 / num_batches_tracked`` (after counting this batch).
    """
    num_batches_tracked += 1
    factor = 1.0 / num_batches_tracked if momentum is None else momentum
    unbiased = var * n / (n - 1)
    new_mean = (1 - factor) * running_mean + factor * mean
    new_var = (1 - factor) * running_var + factor * unbiased
    return new_mean, new_var, num_batches_tracked


# ---------------------------------------------------------------------------------------
# The end of a ResNet block: BatchNorm, a residual add and an activation as one op.
#
#     z   = y + r          # y: BatchNorm's output (batch or running statistics), r: residual
#     out = act(z)         # act: relu or identity
#
# Backward, with ``g = dL/dout``: ``g_z = g * act'(z)`` (ReLU: ``g * [z > 0]``, zero at 0 as in
# torch); ``dr = g_z``; ``dx``, ``dgamma``, ``dbeta`` are BatchNorm's backward of ``g_z``.


def _residual_activation(z: Array, act: str) -> Array:
    if act == "relu":
        return np.maximum(z, 0)
    if act == "identity":
        return z
    raise ValueError(f"act must be 'relu' or 'identity' after a residual add, got {act!r}")


def batch_norm_add_act_train(
    x: Array,
    residual: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
    act: str = "relu",
):
    """``act(batch_norm_train(x) + residual)``; returns ``(out, mean, var)`` (biased ``var``)."""
    y, mean, var = batch_norm_train(x, gamma, beta, eps)
    return _residual_activation(y + residual, act), mean, var


def batch_norm_add_act_eval(
    x: Array,
    residual: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
    act: str = "relu",
) -> Array:
    """``act(batch_norm_eval(x) + residual)``."""
    y = batch_norm_eval(x, running_mean, running_var, gamma, beta, eps)
    return _residual_activation(y + residual, act)


def batch_norm_add_act_backward(
    g: Array,
    out: Array,
    x: Array,
    gamma: Array | None = None,
    eps: float = 1e-5,
    act: str = "relu",
    running_mean: Array | None = None,
    running_var: Array | None = None,
    has_beta: bool = True,
):
    """Backward of :func:`batch_norm_add_act_train` (or ``_eval`` when the running
    statistics are given) from ``g = dL/dout``; returns ``(dx, dresidual, dgamma, dbeta)``.

    For ReLU, ``out > 0`` exactly where ``z > 0``, so the mask is read from the output."""
    g_z = g * (out > 0) if act == "relu" else g
    if running_mean is None:
        dx, dgamma, dbeta = batch_norm_train_backward(g_z, x, gamma, eps, has_beta)
    else:
        dx, dgamma, dbeta = batch_norm_eval_backward(
            g_z, x, running_mean, running_var, gamma, eps, has_beta
        )
    return dx, g_z, dgamma, dbeta


# ---------------------------------------------------------------------------------------
# LayerNorm and RMSNorm: statistics per sample over the trailing normalized_shape.


def _trailing_axes(x: Array, normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    return tuple(range(x.ndim - k, x.ndim))


def layer_norm(
    x: Array,
    normalized_shape: int | Sequence[int],
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """LayerNorm forward on ``x (*, *normalized_shape)``; ``gamma``/``beta`` of ``normalized_shape``."""
    x_hat, _, _ = normalize(x, _trailing_axes(x, normalized_shape), eps)
    return _scale_shift(x_hat, gamma, beta, lambda v: v)


def layer_norm_backward(
    g: Array,
    x: Array,
    normalized_shape: int | Sequence[int],
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`layer_norm`: ``(dx, dgamma, dbeta)``."""
    return _row_backward(g, x, normalized_shape, gamma, eps, True, has_beta)


def rms_norm(
    x: Array, normalized_shape: int | Sequence[int], gamma: Array | None = None, eps: float = 1e-6
) -> Array:
    """RMSNorm forward: ``gamma * x / sqrt(mean(x**2) + eps)`` over the trailing dims."""
    x_hat, _, _ = normalize(x, _trailing_axes(x, normalized_shape), eps, center=False)
    return _scale_shift(x_hat, gamma, None, lambda v: v)


def rms_norm_backward(
    g: Array,
    x: Array,
    normalized_shape: int | Sequence[int],
    gamma: Array | None = None,
    eps: float = 1e-6,
):
    """Backward of :func:`rms_norm`: ``(dx, dgamma)``."""
    dx, dgamma, _ = _row_backward(g, x, normalized_shape, gamma, eps, False, False)
    return dx, dgamma


def _row_backward(g, x, normalized_shape, gamma, eps, center, has_beta):
    axes = _trailing_axes(x, normalized_shape)
    x_hat, _, var = normalize(x, axes, eps, center)
    g_hat = g * gamma if gamma is not None else g
    dx = normalize_backward(g_hat, x_hat, var, axes, eps, center)
    batch_axes = tuple(range(x.ndim - len(axes)))
    dgamma, dbeta = _param_grads(g, x_hat, batch_axes, gamma, True if has_beta else None)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------
# GroupNorm and InstanceNorm: statistics per sample and group of channels.


def group_norm(
    x: Array,
    num_groups: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """GroupNorm forward on ``x (N, C, *)``: each sample's ``C / G`` channels per group
    normalized together over their spatial positions; per-channel ``gamma``/``beta (C,)``."""
    grouped = _grouped(x, num_groups)
    x_hat, _, _ = normalize(grouped, (2,), eps)
    return _scale_shift(x_hat.reshape(x.shape), gamma, beta, lambda v: _per_channel(v, x))


def group_norm_backward(
    g: Array,
    x: Array,
    num_groups: int,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`group_norm`: ``(dx, dgamma, dbeta)``."""
    grouped = _grouped(x, num_groups)
    x_hat, _, var = normalize(grouped, (2,), eps)
    g_hat = g * _per_channel(gamma, x) if gamma is not None else g
    dx = normalize_backward(_grouped(g_hat, num_groups), x_hat, var, (2,), eps)
    dgamma, dbeta = _param_grads(
        g, x_hat.reshape(x.shape), _channel_axes(x), gamma, True if has_beta else None
    )
    return dx.reshape(x.shape), dgamma, dbeta


def _grouped(x: Array, num_groups: int) -> Array:
    return x.reshape(x.shape[0], num_groups, -1)


def instance_norm(
    x: Array, gamma: Array | None = None, beta: Array | None = None, eps: float = 1e-5
) -> Array:
    """InstanceNorm forward: every ``(n, c)`` plane of ``x (N, C, *)`` normalized on its own."""
    x_hat, _, _ = normalize(x, tuple(range(2, x.ndim)), eps)
    return _scale_shift(x_hat, gamma, beta, lambda v: _per_channel(v, x))


def instance_norm_backward(
    g: Array, x: Array, gamma: Array | None = None, eps: float = 1e-5, has_beta: bool = True
):
    """Backward of :func:`instance_norm`: ``(dx, dgamma, dbeta)``."""
    axes = tuple(range(2, x.ndim))
    x_hat, _, var = normalize(x, axes, eps)
    g_hat = g * _per_channel(gamma, x) if gamma is not None else g
    dx = normalize_backward(g_hat, x_hat, var, axes, eps)
    dgamma, dbeta = _param_grads(g, x_hat, _channel_axes(x), gamma, True if has_beta else None)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------
# Masked normalization: statistics from the valid positions of a padded batch only.
#
# ``mask`` has the shape of ``x (N, C, *spatial)`` without the channel axis, ``(N, *spatial)``,
# True at valid positions. With ``m = 1`` at valid positions and ``0`` at padded ones, per
# normalized group (a channel for BatchNorm, a sample's channel for InstanceNorm, a sample's
# group of channels for GroupNorm)::
#
#     n      = sum(m)                                  # valid values in the group
#     mean   = sum(m * x) / n
#     var    = sum(m * (x - mean)**2) / n              # biased: used to normalize
#     x_hat  = m * (x - mean) / sqrt(var + eps)
#     y      = m * (gamma * x_hat + beta)              # padded positions give exactly 0
#
# Backward, with ``g_hat = m * g * gamma`` (padded positions receive exactly 0)::
#
#     dx     = rstd / n * (n * g_hat - sum(g_hat) - x_hat * sum(g_hat * x_hat))
#     dgamma = sum(m * g * x_hat);   dbeta = sum(m * g)
#
# A group without valid positions (``n = 0``, e.g. an empty sample in GroupNorm) has
# ``mean = var = 0`` here and outputs zeros. Masked BatchNorm over a padded batch is plain
# BatchNorm over the valid frames gathered into one ``(n, C)`` batch, running statistics
# included (``n`` is the valid count in Bessel's ``n / (n - 1)``).


def lengths_to_mask(lengths: Sequence[int] | Array, max_len: int | None = None) -> Array:
    """``mask[i, t] = t < lengths[i]``: a ``(N, max_len)`` bool array (default max_len:
    ``max(lengths)``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.size else 0
    return np.arange(max_len)[None, :] < lengths[:, None]


def _valid(mask: Array, x: Array) -> Array:
    """``mask (N, *spatial)`` as 0/1 values broadcasting against ``x (N, C, *spatial)``."""
    return np.expand_dims(np.asarray(mask, dtype=bool), 1).astype(x.dtype)


def masked_normalize(x: Array, m: Array, axes: tuple[int, ...], eps: float):
    """``x_hat = m * (x - mean) / sqrt(var + eps)`` with the statistics of the valid values
    (``m = 1``) over ``axes``. Returns ``(x_hat, mean, var, n)``, the last three keeping the
    reduced axes; groups without valid values get ``mean = var = 0``."""
    m = np.broadcast_to(m, x.shape)
    n = m.sum(axis=axes, keepdims=True)
    safe = np.where(n > 0, n, 1)
    mean = np.where(n > 0, (m * x).sum(axis=axes, keepdims=True) / safe, 0)
    var = np.where(n > 0, (m * (x - mean) ** 2).sum(axis=axes, keepdims=True) / safe, 0)
    x_hat = m * (x - mean) / np.sqrt(var + eps)
    return x_hat, mean, var, n


def masked_normalize_backward(
    g_hat: Array, x_hat: Array, var: Array, n: Array, m: Array, axes: tuple[int, ...], eps: float
) -> Array:
    """``dx`` of :func:`masked_normalize` from ``g_hat = dL/dx_hat``, zero at padded positions."""
    g_hat = np.broadcast_to(m, g_hat.shape) * g_hat
    rstd = 1.0 / np.sqrt(var + eps)
    safe = np.where(n > 0, n, 1)
    sum_g = g_hat.sum(axis=axes, keepdims=True)
    sum_g_xhat = (g_hat * x_hat).sum(axis=axes, keepdims=True)
    return rstd / safe * (n * g_hat - np.broadcast_to(m, g_hat.shape) * sum_g - x_hat * sum_g_xhat)


def masked_batch_norm_train(
    x: Array, mask: Array, gamma: Array | None = None, beta: Array | None = None, eps: float = 1e-5
):
    """Masked BatchNorm, training forward: per channel over the valid positions of
    ``x (N, C, *)``. Returns ``(y, mean (C,), var (C,), n)`` (biased ``var``, ``n`` valid
    values per channel)."""
    m = _valid(mask, x)
    x_hat, mean, var, n = masked_normalize(x, m, _channel_axes(x), eps)
    y = m * _scale_shift(x_hat, gamma, beta, lambda v: _per_channel(v, x))
    return y, mean.reshape(-1), var.reshape(-1), int(n.reshape(-1)[0])


def masked_batch_norm_train_backward(
    g: Array,
    x: Array,
    mask: Array,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`masked_batch_norm_train`: ``(dx, dgamma, dbeta)``."""
    m = _valid(mask, x)
    axes = _channel_axes(x)
    x_hat, _, var, n = masked_normalize(x, m, axes, eps)
    g = m * g
    g_hat = g * _per_channel(gamma, x) if gamma is not None else g
    dx = masked_normalize_backward(g_hat, x_hat, var, n, m, axes, eps)
    dgamma, dbeta = _param_grads(g, x_hat, axes, gamma, True if has_beta else None)
    return dx, dgamma, dbeta


def masked_batch_norm_eval(
    x: Array,
    mask: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Masked BatchNorm, inference: :func:`batch_norm_eval` at valid positions, 0 elsewhere."""
    return _valid(mask, x) * batch_norm_eval(x, running_mean, running_var, gamma, beta, eps)


def masked_batch_norm_eval_backward(
    g: Array,
    x: Array,
    mask: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`masked_batch_norm_eval`: :func:`batch_norm_eval_backward` of the
    masked output gradient, ``dx`` zero at padded positions."""
    m = _valid(mask, x)
    dx, dgamma, dbeta = batch_norm_eval_backward(
        m * g, x, running_mean, running_var, gamma, eps, has_beta
    )
    return m * dx, dgamma, dbeta


def masked_instance_norm(
    x: Array, mask: Array, gamma: Array | None = None, beta: Array | None = None, eps: float = 1e-5
) -> Array:
    """Masked InstanceNorm: every ``(n, c)`` plane normalized over its own valid positions."""
    m = _valid(mask, x)
    x_hat, _, _, _ = masked_normalize(x, m, tuple(range(2, x.ndim)), eps)
    return m * _scale_shift(x_hat, gamma, beta, lambda v: _per_channel(v, x))


def masked_instance_norm_backward(
    g: Array,
    x: Array,
    mask: Array,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`masked_instance_norm`: ``(dx, dgamma, dbeta)``."""
    m = _valid(mask, x)
    axes = tuple(range(2, x.ndim))
    x_hat, _, var, n = masked_normalize(x, m, axes, eps)
    g = m * g
    g_hat = g * _per_channel(gamma, x) if gamma is not None else g
    dx = masked_normalize_backward(g_hat, x_hat, var, n, m, axes, eps)
    dgamma, dbeta = _param_grads(g, x_hat, _channel_axes(x), gamma, True if has_beta else None)
    return dx, dgamma, dbeta


def masked_instance_norm_running_stats(
    running_mean: Array, running_var: Array, x: Array, mask: Array, momentum: float = 0.1
):
    """InstanceNorm's running-statistics step with masks: towards the average, over the
    samples with valid positions, of each instance's mean and unbiased variance
    ``var_n * n_n / (n_n - 1)`` (``n_n`` the sample's valid positions). Returns the new
    ``(running_mean, running_var)``."""
    m = _valid(mask, x)
    _, mean, var, n = masked_normalize(x, m, tuple(range(2, x.ndim)), 0.0)
    mean, var, n = mean.reshape(x.shape[:2]), var.reshape(x.shape[:2]), n.reshape(x.shape[:2])
    present = n[:, 0] > 0
    unbiased = var[present] * n[present] / (n[present] - 1)
    new_mean = (1 - momentum) * running_mean + momentum * mean[present].mean(axis=0)
    new_var = (1 - momentum) * running_var + momentum * unbiased.mean(axis=0)
    return new_mean, new_var


def masked_group_norm(
    x: Array,
    mask: Array,
    num_groups: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Masked GroupNorm: each sample's group of ``C / G`` channels normalized over its valid
    positions (``n = C / G * valid positions of the sample``)."""
    grouped, m = _masked_groups(x, mask, num_groups)
    x_hat, _, _, _ = masked_normalize(grouped, m, _group_axes(grouped), eps)
    y = _scale_shift(x_hat.reshape(x.shape), gamma, beta, lambda v: _per_channel(v, x))
    return _valid(mask, x) * y


def masked_group_norm_backward(
    g: Array,
    x: Array,
    mask: Array,
    num_groups: int,
    gamma: Array | None = None,
    eps: float = 1e-5,
    has_beta: bool = True,
):
    """Backward of :func:`masked_group_norm`: ``(dx, dgamma, dbeta)``."""
    grouped, m = _masked_groups(x, mask, num_groups)
    axes = _group_axes(grouped)
    x_hat, _, var, n = masked_normalize(grouped, m, axes, eps)
    g = _valid(mask, x) * g
    g_hat = g * _per_channel(gamma, x) if gamma is not None else g
    dx = masked_normalize_backward(g_hat.reshape(grouped.shape), x_hat, var, n, m, axes, eps)
    dgamma, dbeta = _param_grads(
        g, x_hat.reshape(x.shape), _channel_axes(x), gamma, True if has_beta else None
    )
    return dx.reshape(x.shape), dgamma, dbeta


def _masked_groups(x: Array, mask: Array, num_groups: int):
    """``x`` as ``(N, G, C / G, *spatial)`` and the mask as ``(N, 1, 1, *spatial)`` 0/1 values."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, c // num_groups, *x.shape[2:])
    m = np.asarray(mask, dtype=bool).reshape(n, 1, 1, *x.shape[2:]).astype(x.dtype)
    return grouped, m


def _group_axes(grouped: Array) -> tuple[int, ...]:
    return tuple(range(2, grouped.ndim))
