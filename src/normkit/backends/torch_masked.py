"""Masked normalization in composite torch operations: the ``"torch"`` backend of the masked
ops (every device and dtype), the differentiable recompute behind their double backward,
and the running-statistics step with a valid count.

Every function here is the **contract** of the op of the same name in
:mod:`normkit.backends.numba_masked`. ``x`` is the layer's ``(N, C, *)`` tensor and ``mask``
a bool ``(N, *)`` tensor (True = valid position); statistics come from the valid positions
only, padded positions output exactly 0 and receive exactly 0 gradient (``torch.where``
selects, so whatever the padded positions hold never reaches a result). ``count`` is the
valid count as a 0-d float64 tensor (BatchNorm: ``mask.sum()``); ``counts`` the valid
positions per sample, ``(N,)`` float64 (InstanceNorm, GroupNorm)::

    masked_batch_norm_train(x, mask, count, weight, bias, running_mean, running_var,
        num_batches_tracked, momentum, eps, act, negative_slope, name) -> y
    masked_batch_norm_eval(x, mask, weight, bias, running_mean, running_var, eps, act,
        negative_slope) -> y
    masked_instance_norm_train(x, mask, counts, weight, bias, running_mean, running_var,
        momentum, eps, name) -> y
    masked_group_norm(x, mask, counts, num_groups, weight, bias, eps) -> y
    masked_bn_stats(x, mask, count) -> (mean, var)                  # the primitives of the
    masked_bn_elemt(x, mask, mean, invstd, weight, bias, act, slope) -> y     # masked
    masked_bn_backward_reduce(grad, x, mask, mean, invstd, weight, bias, act, slope)  # variants
        -> (sum_dy, sum_dy_xhat)
    masked_bn_backward_elemt(grad, x, mask, mean, invstd, weight, bias, sum_dy, sum_dy_xhat,
        count, act, slope) -> dx

The formulas are those of :mod:`normkit.reference` (masked section). Everything is
differentiable through torch's autograd, to any order. Statistics are in the accumulation
dtype (float64 for float64 inputs, float32 otherwise); outputs keep ``x``'s layout.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit._shared import accumulation_dtype, per_channel_format
from normkit.backends._ops import define
from normkit.backends.running import running_stats_update
from normkit.backends.torch_ops import activation, activation_grad

# ---------------------------------------------------------------------------------------
# Shapes.


def _valid(mask: Tensor) -> Tensor:
    """``mask (N, *)`` as ``(N, 1, *)``, broadcasting against ``x (N, C, *)``."""
    return mask.unsqueeze(1)


def _sanitized(t: Tensor, mask: Tensor) -> Tensor:
    """``t`` with 0 at padded positions: whatever they held (NaN, Inf) can then reach no
    result, forward or backward (``torch.where``'s gradient there is exactly 0)."""
    return torch.where(_valid(mask), t, 0.0)


def _dims(x: Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.dim()))


def _channel(v: Tensor | None, acc: torch.dtype, x: Tensor) -> Tensor | None:
    return None if v is None else v.to(acc).reshape(-1, *(1,) * (x.dim() - 2))


def _keep_layout(out: Tensor, x: Tensor) -> Tensor:
    """``out`` with ``x``'s strides when ``x`` is dense (channels_last stays channels_last,
    an ``(N, L, C)`` sequence seen as ``(N, C, L)`` stays so)."""
    if out.stride() == x.stride() or not _dense(x):
        return out
    return torch.empty_like(x, dtype=out.dtype).copy_(out)


def _dense(x: Tensor) -> bool:
    return x.is_contiguous() or x.movedim(1, -1).is_contiguous()


# ---------------------------------------------------------------------------------------
# BatchNorm: statistics per channel over the valid positions of (N, *).


def masked_moments(x: Tensor, mask: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean (C,), var (C,))`` of the valid positions (biased variance, in the
    accumulation dtype), differentiable in ``x``."""
    acc = accumulation_dtype(x.dtype)
    m = _valid(mask)
    xa = _sanitized(x.to(acc), mask)
    n = count.to(acc)
    dims = _dims(x)
    mean = xa.sum(dim=dims) / n
    centered = torch.where(m, xa - _channel(mean, acc, x), 0.0)
    return mean, centered.square().sum(dim=dims) / n


def masked_bn_stats(x: Tensor, mask: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    return masked_moments(x, mask, count)


def _pre_activation(x, mean, invstd, weight, bias, acc):
    x_hat = (x.to(acc) - _channel(mean, acc, x)) * _channel(invstd, acc, x)
    pre = x_hat
    if weight is not None:
        pre = pre * _channel(weight, acc, x)
    if bias is not None:
        pre = pre + _channel(bias, acc, x)
    return x_hat, pre


def masked_bn_elemt(
    x: Tensor,
    mask: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    acc = accumulation_dtype(x.dtype)
    _, pre = _pre_activation(_sanitized(x, mask), mean, invstd, weight, bias, acc)
    y = torch.where(_valid(mask), activation(pre, act, negative_slope), 0.0)
    return _keep_layout(y.to(x.dtype), x)


def masked_bn_backward_reduce(
    grad: Tensor,
    x: Tensor,
    mask: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> tuple[Tensor, Tensor]:
    acc = accumulation_dtype(x.dtype)
    m = _valid(mask)
    x_hat, pre = _pre_activation(_sanitized(x, mask), mean, invstd, weight, bias, acc)
    g = _sanitized(grad.to(acc), mask)
    dy = torch.where(m, activation_grad(g, pre, act, negative_slope), 0.0)
    dims = _dims(x)
    return dy.sum(dim=dims), torch.where(m, dy * x_hat, 0.0).sum(dim=dims)


def masked_bn_backward_elemt(
    grad: Tensor,
    x: Tensor,
    mask: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    sum_dy: Tensor | None,
    sum_dy_xhat: Tensor | None,
    count: Tensor,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    acc = accumulation_dtype(x.dtype)
    m = _valid(mask)
    x_hat, pre = _pre_activation(_sanitized(x, mask), mean, invstd, weight, bias, acc)
    dy = activation_grad(_sanitized(grad.to(acc), mask), pre, act, negative_slope)
    scale = _channel(invstd if weight is None else invstd * weight.to(acc), acc, x)
    if sum_dy is not None and sum_dy_xhat is not None:
        n = count.to(acc)
        dy = dy - _channel(sum_dy, acc, x) / n - x_hat * (_channel(sum_dy_xhat, acc, x) / n)
    return _keep_layout(torch.where(m, dy * scale, 0.0).to(x.dtype), x)


def batch_norm_train_output(
    x: Tensor,
    mask: Tensor,
    count: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, mean, var)`` of masked BatchNorm in training, differentiable in ``x``,
    ``weight`` and ``bias`` (to any order: the numba backend's double backward)."""
    mean, var = masked_moments(x, mask, count)
    invstd = torch.rsqrt(var + eps)
    return masked_bn_elemt(x, mask, mean, invstd, weight, bias, act, negative_slope), mean, var


def masked_batch_norm_train(
    x: Tensor,
    mask: Tensor,
    count: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
    name: str = "batch_norm",
) -> Tensor:
    y, mean, var = batch_norm_train_output(x, mask, count, weight, bias, eps, act, negative_slope)
    if running_mean is not None or running_var is not None:
        masked_running_stats_update(
            running_mean, running_var, num_batches_tracked, mean.detach(), var.detach(), count,
            momentum, name,
        )  # fmt: skip
    return y


def masked_batch_norm_eval(
    x: Tensor,
    mask: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    acc = accumulation_dtype(x.dtype)
    invstd = torch.rsqrt(running_var.to(acc) + eps)
    return masked_bn_elemt(x, mask, running_mean.to(acc), invstd, weight, bias, act, negative_slope)


# ---------------------------------------------------------------------------------------
# GroupNorm and InstanceNorm: statistics per sample and group over its valid positions.


def group_moments(
    x: Tensor, mask: Tensor, counts: Tensor, num_groups: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_hat source: centered (N, G, K, L), mean (N, G), var (N, G))`` over each group's
    valid positions; an empty group has ``mean = var = 0``."""
    acc = accumulation_dtype(x.dtype)
    n, c = x.shape[:2]
    k = c // num_groups
    xg = _sanitized(x.to(acc), mask).reshape(n, num_groups, k, -1)
    m = mask.reshape(n, 1, 1, -1)
    total = (counts.to(acc) * k).clamp_min(1.0).reshape(n, 1, 1, 1)
    mean = xg.sum(dim=(2, 3), keepdim=True) / total
    centered = torch.where(m, xg - mean, 0.0)
    var = centered.square().sum(dim=(2, 3), keepdim=True) / total
    return centered, mean.reshape(n, num_groups), var.reshape(n, num_groups)


def group_norm_output(
    x: Tensor,
    mask: Tensor,
    counts: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, mean (N, G), var (N, G))`` of masked GroupNorm, differentiable."""
    acc = accumulation_dtype(x.dtype)
    centered, mean, var = group_moments(x, mask, counts, num_groups)
    rstd = torch.rsqrt(var + eps).reshape(*var.shape, 1, 1)
    y = (centered * rstd).reshape(x.shape)
    if weight is not None:
        y = y * _channel(weight, acc, x)
    if bias is not None:
        y = y + _channel(bias, acc, x)
    return torch.where(_valid(mask), y, 0.0).to(x.dtype), mean, var


def masked_group_norm(
    x: Tensor,
    mask: Tensor,
    counts: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    y = group_norm_output(x, mask, counts, num_groups, weight, bias, eps)[0]
    return y.contiguous(memory_format=per_channel_format(x))  # as torch's group norm


def masked_instance_norm_train(
    x: Tensor,
    mask: Tensor,
    counts: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    name: str = "instance_norm",
) -> Tensor:
    y, mean, var = group_norm_output(x, mask, counts, x.shape[1], weight, bias, eps)
    if running_mean is not None or running_var is not None:
        masked_running_stats_update(
            running_mean, running_var, None, mean.detach(), var.detach(), counts, momentum, name
        )
    return y.contiguous()


# ---------------------------------------------------------------------------------------
# Running statistics with a valid count (a tensor: it comes from the mask, so reading it
# stays inside this opaque op under torch.compile).
#
# ``count`` 0-d (BatchNorm): ``batch_mean``/``batch_var (C,)`` of ``count`` valid values per
# channel, Bessel ``count / (count - 1)``. ``count (N,)`` (InstanceNorm): ``batch_mean``/
# ``batch_var (N, C)`` per instance; the buffers move towards the average, over the samples
# with ``count > 0``, of the instance means and unbiased variances ``var * count / (count - 1)``.


@torch.no_grad()
def _masked_update_impl(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    count: Tensor,
    momentum: float | None,
    name: str,
) -> None:
    if count.dim() == 0:  # BatchNorm: torch's rule with the valid count
        running_stats_update(
            running_mean, running_var, num_batches_tracked, batch_mean, batch_var, float(count),
            momentum, name,
        )  # fmt: skip
        return
    # InstanceNorm: the average over the samples with valid positions of each instance's
    # mean and unbiased variance (each with its own count).
    present = count > 0
    weights = present.to(batch_mean.dtype).unsqueeze(1)
    samples = weights.sum()
    bessel = (count / (count - 1).clamp_min(1.0)).to(batch_var.dtype).unsqueeze(1)
    mean = (batch_mean * weights).sum(0) / samples
    unbiased = (batch_var * bessel * weights).sum(0) / samples
    # running_stats_update applies Bessel's c / (c - 1) itself: with c = 2 that is exactly 2,
    # which undoes the (exact) halving; the per-instance correction is already in `unbiased`.
    running_stats_update(
        running_mean, running_var, num_batches_tracked, mean, unbiased * 0.5, 2.0, momentum,
        name,
    )  # fmt: skip


def _masked_update_fake(
    running_mean, running_var, num_batches_tracked, batch_mean, batch_var, count, momentum, name
) -> None:
    return None


masked_running_stats_update = define(
    "masked_running_stats_update(Tensor(a!)? running_mean, Tensor(b!)? running_var, "
    "Tensor(c!)? num_batches_tracked, Tensor batch_mean, Tensor batch_var, Tensor count, "
    "float? momentum, str name) -> ()",
    _masked_update_impl,
    _masked_update_fake,
    "CompositeExplicitAutograd",
)

OPS = {
    "masked_batch_norm_train": masked_batch_norm_train,
    "masked_batch_norm_eval": masked_batch_norm_eval,
    "masked_instance_norm_train": masked_instance_norm_train,
    "masked_group_norm": masked_group_norm,
    "masked_bn_stats": masked_bn_stats,
    "masked_bn_elemt": masked_bn_elemt,
    "masked_bn_backward_reduce": masked_bn_backward_reduce,
    "masked_bn_backward_elemt": masked_bn_backward_elemt,
}
