"""Differentiable building blocks of the masked BatchNorm variants (batch renorm, sync BN),
composed from the masked BN primitives: the counterparts of
:mod:`normkit.autograd.batch_norm_variants` for a padded batch with a bool ``mask (N, *)``.

1. :func:`masked_batch_stats` -- per-channel ``(mean, var)`` of the valid positions of
   ``x (N, C, *)`` (``count`` of them), not differentiable.
2. :func:`masked_bn_apply` -- ``y = act((x - mean) * invstd * weight + bias)`` at valid
   positions, 0 at padded ones, differentiable in ``x``, ``weight`` and ``bias``. With
   ``batch_stats=True`` the backward treats ``mean``/``invstd`` as the statistics of the
   valid positions of ``x`` (sums over valid positions only, ``n = count``)::

       sum_dy = sum_valid(dy),  sum_dy_xhat = sum_valid(dy * x_hat)
       dx     = weight * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n),  0 at pads

   With ``group_name`` (sync BN) the sums and the count are summed over the process group
   first; ``dweight``/``dbias`` stay this process's own share.

The backward runs as one registered op (``normkit::masked_bn_apply_backward``, opaque under
``torch.compile`` since it may hold a collective); double backward recomputes the forward
with the composite torch primitives (statistics included) and differentiates it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit._shared import accumulation_dtype
from normkit.autograd import sync
from normkit.backends import select, torch_masked
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd


def masked_batch_stats(
    x: Tensor, mask: Tensor, count: Tensor, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean (C,), var (C,))`` of the ``count`` valid positions of ``x``
    (biased variance, accumulation dtype), not differentiable. An empty ``x`` gives zeros."""
    if x.numel() == 0:
        acc = accumulation_dtype(x.dtype)
        return x.new_zeros(x.shape[1], dtype=acc), x.new_zeros(x.shape[1], dtype=acc)
    return select("masked_bn_stats", x, backend)(x.detach(), mask, count)


def _apply(x, mask, mean, invstd, weight, bias, act, slope, backend) -> Tensor:
    if x.numel() == 0:
        return torch.empty_like(x)
    return select("masked_bn_elemt", x, backend)(x, mask, mean, invstd, weight, bias, act, slope)


def _apply_backward_impl(
    grad, x, mask, count, mean, invstd, weight, bias, act, slope, batch_stats, group_name,
    backend, need_dx, need_params,
):  # fmt: skip
    acc = accumulation_dtype(x.dtype)
    channels = x.shape[1]
    if x.numel() == 0 or not (batch_stats or need_params):
        sum_dy = x.new_zeros(channels, dtype=acc)
        sum_dy_xhat = x.new_zeros(channels, dtype=acc)
    else:
        reduce = select("masked_bn_backward_reduce", x, backend)
        sum_dy, sum_dy_xhat = reduce(grad, x, mask, mean, invstd, weight, bias, act, slope)
    if not need_dx:
        return x.new_empty(0), sum_dy_xhat.clone(), sum_dy.clone()
    total_dy, total_dy_xhat, total = sum_dy, sum_dy_xhat, count
    if batch_stats and group_name is not None:
        # Every member must join this collective, an empty shard included.
        total_dy, total_dy_xhat, n = sync.all_reduce_grad_sums(
            sum_dy, sum_dy_xhat, round(float(count)), group_name
        )
        total = count.new_tensor(float(n))
    if x.numel() == 0:
        return torch.empty_like(x), sum_dy_xhat.clone(), sum_dy.clone()
    elemt = select("masked_bn_backward_elemt", x, backend)
    if batch_stats:
        dx = elemt(
            grad, x, mask, mean, invstd, weight, bias, total_dy, total_dy_xhat, total, act, slope
        )
    else:
        dx = elemt(grad, x, mask, mean, invstd, weight, bias, None, None, total, act, slope)
    return dx, sum_dy_xhat.clone(), sum_dy.clone()


def _apply_backward_fake(
    grad, x, mask, count, mean, invstd, weight, bias, act, slope, batch_stats, group_name,
    backend, need_dx, need_params,
):  # fmt: skip
    acc = accumulation_dtype(x.dtype)
    channels = x.shape[1]
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    return dx, x.new_empty(channels, dtype=acc), x.new_empty(channels, dtype=acc)


_apply_backward_op = define(
    "masked_bn_apply_backward(Tensor grad, Tensor x, Tensor mask, Tensor count, Tensor mean, "
    "Tensor invstd, Tensor? weight, Tensor? bias, str act, float slope, bool batch_stats, "
    "str? group_name, str? backend, bool need_dx, bool need_params) "
    "-> (Tensor, Tensor, Tensor)",
    _apply_backward_impl,
    _apply_backward_fake,
    "CompositeExplicitAutograd",
)


def _composite_forward(mask, count, mean, invstd, eps, act, slope, batch_stats, group_name):
    """The differentiable forward used for double backward (statistics recomputed)."""

    def forward(x, weight, bias):
        m, s = mean, invstd
        if batch_stats:
            if group_name is not None:
                m, var = sync.differentiable_global_stats(x, group_name, mask)
            else:
                m, var = torch_masked.masked_moments(x, mask, count)
            s = torch.rsqrt(var + eps)
        return torch_masked.masked_bn_elemt(x, mask, m, s, weight, bias, act, slope)

    return forward


class _MaskedApplyFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, mask, count, mean, invstd, weight, bias, eps, act, slope, batch_stats, group,
        backend,
    ):  # fmt: skip
        ctx.save_for_backward(x, mask, count, mean, invstd, weight, bias)
        ctx.options = (eps, act, slope, batch_stats, group, backend)
        return _apply(x, mask, mean, invstd, weight, bias, act, slope, backend)

    @staticmethod
    def backward(ctx, grad):
        x, mask, count, mean, invstd, weight, bias = ctx.saved_tensors
        eps, act, slope, batch_stats, group, backend = ctx.options
        need_x, need_w, need_b = (ctx.needs_input_grad[i] for i in (0, 5, 6))
        if torch.is_grad_enabled():
            forward = _composite_forward(
                mask, count, mean, invstd, eps, act, slope, batch_stats, group
            )
            dx, dweight, dbias = differentiable_grads(
                forward, (x, weight, bias), grad, (need_x, need_w, need_b)
            )
        else:
            dx, dweight, dbias = _apply_backward_op(
                grad, x, mask, count, mean, invstd, weight, bias, act, slope, batch_stats, group,
                backend, need_x, need_w or need_b,
            )  # fmt: skip
        return (
            dx if need_x else None,
            None,
            None,
            None,
            None,
            cast_grad(dweight, dtype_of(weight)) if need_w else None,
            cast_grad(dbias, dtype_of(bias)) if need_b else None,
            *(None,) * 6,
        )


def masked_bn_apply(
    x: Tensor,
    mask: Tensor,
    count: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
    batch_stats: bool = True,
    group_name: str | None = None,
    backend: str | None = None,
) -> Tensor:
    """``y = act((x - mean) * invstd * weight + bias)`` at the valid positions of ``x``, 0 at
    padded ones.

    Args:
        mask: bool ``(N, *)``, True at valid positions.
        count: this process's valid count (0-d float64 tensor): the ``n`` of the backward
            (summed over ``group_name``'s processes for sync BN).
        mean, invstd: ``(C,)`` statistics in the accumulation dtype, no gradient.
        weight, bias: ``(C,)`` or None; differentiable.
        eps, act, negative_slope, batch_stats, group_name, backend: as
            :func:`normkit.autograd.batch_norm_variants.bn_apply`.
    """
    if not needs_autograd(x, weight, bias):
        return _apply(x, mask, mean, invstd, weight, bias, act, negative_slope, backend)
    return _MaskedApplyFn.apply(
        x, mask, count, mean, invstd, weight, bias, eps, act, negative_slope, batch_stats,
        group_name, backend,
    )  # fmt: skip
