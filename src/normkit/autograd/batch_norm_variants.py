"""Differentiable building blocks of the BatchNorm variants, composed from the BN primitives.

Every variant (batch renorm, ghost batches, fused activation, sync BN) is two steps:

1. :func:`batch_stats` -- per-channel ``(mean, var)`` of ``x (N, C, *)`` (biased variance,
   accumulation dtype), not differentiable; the variant then post-processes them
   (sync BN merges them across processes, batch renorm derives ``r`` and ``d``).
2. :func:`bn_apply` -- ``y = act((x - mean) * invstd * weight + bias)``, differentiable in
   ``x``, ``weight`` and ``bias``. With ``own_statistics=True`` the backward treats
   ``mean``/``invstd`` as the statistics of ``x`` itself (the full BatchNorm backward)::

       dy          = grad * act'(pre)
       sum_dy      = sum(dy),  sum_dy_xhat = sum(dy * x_hat)        # = dbias, dweight
       dx          = weight * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)

   and with ``own_statistics=False`` as constants (running or frozen statistics), so
   ``dx = dy * weight * invstd``. With ``group_name`` (sync BN), ``sum_dy``, ``sum_dy_xhat``
   and ``n`` are summed over the process group before ``dx`` (see
   :mod:`normkit.autograd.sync`); ``dweight``/``dbias`` stay this process's own share.

Batch renorm folds its stop-gradient ``r, d`` into ``weight``/``bias`` *before* calling
:func:`bn_apply` (``weight' = weight * r``, ``bias' = bias + weight * d``), so autograd's
chain rule gives ``dweight = r * sum_dy_xhat + d * sum_dy``: nothing renorm-specific here.

One :class:`torch.autograd.Function` serves eager mode and ``torch.compile`` alike: its
forward calls the backend's ``bn_elemt`` op, its backward the registered op
``normkit::bn_apply_backward`` (reduce, the all-reduce of sync BN, elemt: one opaque node
under compile, since it may hold a collective). Double backward (``create_graph=True``)
recomputes the forward with the composite torch primitives and differentiates it
(statistics included).
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit._shared import accumulation_dtype
from normkit.autograd import sync
from normkit.backends import select, torch_ops
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd

# ---------------------------------------------------------------------------------------
# The computation.


def _stats(x: Tensor, backend: str | None) -> tuple[Tensor, Tensor]:
    if x.numel() == 0:  # an empty shard (sync BN): no statistics, merged with weight 0
        acc = accumulation_dtype(x.dtype)
        return x.new_zeros(x.shape[1], dtype=acc), x.new_zeros(x.shape[1], dtype=acc)
    return select("bn_stats", x, backend)(x)


def _apply(x, mean, invstd, weight, bias, act, negative_slope, backend) -> Tensor:
    if x.numel() == 0:
        return torch.empty_like(x)
    impl = select("bn_elemt", x, backend)
    return impl(x, mean, invstd, weight, bias, act, negative_slope)


def _apply_backward(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    act: str,
    negative_slope: float,
    own_statistics: bool,
    group_name: str | None,
    backend: str | None,
    need_dx: bool,
    need_params: bool = True,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """First-order gradients ``(dx or None, sum_dy_xhat, sum_dy)`` (the last two are the
    local ``dweight``/``dbias`` before any cast). With fixed statistics and no parameter
    gradient wanted (frozen affine), the reduction pass is skipped (sums returned as 0)."""
    channels = x.shape[1]
    if x.numel() == 0 or not (own_statistics or need_params):
        acc = accumulation_dtype(x.dtype)
        sum_dy = x.new_zeros(channels, dtype=acc)
        sum_dy_xhat = x.new_zeros(channels, dtype=acc)
    else:
        reduce = select("bn_backward_reduce", x, backend)
        sum_dy, sum_dy_xhat = reduce(grad, x, mean, invstd, weight, bias, act, negative_slope)
    if not need_dx:
        return None, sum_dy_xhat, sum_dy
    total_dy, total_dy_xhat, count = sum_dy, sum_dy_xhat, x.numel() // max(channels, 1)
    if own_statistics and group_name is not None:
        # Every member must join this collective, an empty shard included.
        total_dy, total_dy_xhat, count = sync.all_reduce_grad_sums(
            sum_dy, sum_dy_xhat, count, group_name
        )
    if x.numel() == 0:
        return torch.empty_like(x), sum_dy_xhat, sum_dy
    elemt = select("bn_backward_elemt", x, backend)
    if own_statistics:
        dx = elemt(
            grad, x, mean, invstd, weight, bias, total_dy, total_dy_xhat, count, act,
            negative_slope,
        )  # fmt: skip
    else:
        dx = elemt(grad, x, mean, invstd, weight, bias, None, None, 0, act, negative_slope)
    return dx, sum_dy_xhat, sum_dy


def _composite_forward(mean, invstd, eps, act, negative_slope, own_statistics, group_name):
    """The differentiable forward used for double backward (statistics recomputed from x)."""

    def forward(x, weight, bias):
        m, s = mean, invstd
        if own_statistics:
            if group_name is not None:
                m, var = sync.differentiable_global_stats(x, group_name)
            else:
                m, var = torch_ops.batch_norm_stats(x)
            s = torch.rsqrt(var + eps)
        return torch_ops.batch_norm_elemt(x, m, s, weight, bias, act, negative_slope)

    return forward


# ---------------------------------------------------------------------------------------
# The backward as one registered op (opaque under torch.compile: it may hold a collective).


def _apply_backward_impl(
    grad, x, mean, invstd, weight, bias, act, slope, own_statistics, group_name, backend, need_dx,
    need_params,
):  # fmt: skip
    dx, dweight, dbias = _apply_backward(
        grad, x, mean, invstd, weight, bias, act, slope, own_statistics, group_name, backend,
        need_dx, need_params,
    )  # fmt: skip
    dx = dx if dx is not None else x.new_empty(0)
    return dx, dweight.clone(), dbias.clone()


def _apply_backward_fake(
    grad, x, mean, invstd, weight, bias, act, slope, own_statistics, group, backend, need_dx, need_p
):  # fmt: skip
    acc = accumulation_dtype(x.dtype)
    channels = x.shape[1]
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    return dx, x.new_empty(channels, dtype=acc), x.new_empty(channels, dtype=acc)


_apply_backward_op = define(
    "bn_apply_backward(Tensor grad, Tensor x, Tensor mean, Tensor invstd, Tensor? weight, "
    "Tensor? bias, str act, float slope, bool own_statistics, str? group_name, str? backend, "
    "bool need_dx, bool need_params) -> (Tensor, Tensor, Tensor)",
    _apply_backward_impl,
    _apply_backward_fake,
    "CompositeExplicitAutograd",
)


class _BatchNormApplyFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, mean, invstd, weight, bias, eps, act, negative_slope, own_statistics, group, backend
    ):
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.options = (eps, act, negative_slope, own_statistics, group, backend)
        return _apply(x, mean, invstd, weight, bias, act, negative_slope, backend)

    @staticmethod
    def backward(ctx, grad):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        eps, act, slope, own_statistics, group, backend = ctx.options
        need_x, need_w, need_b = (ctx.needs_input_grad[i] for i in (0, 3, 4))
        if torch.is_grad_enabled():
            forward = _composite_forward(mean, invstd, eps, act, slope, own_statistics, group)
            dx, dweight, dbias = differentiable_grads(
                forward, (x, weight, bias), grad, (need_x, need_w, need_b)
            )
        else:
            dx, dweight, dbias = _apply_backward_op(
                grad, x, mean, invstd, weight, bias, act, slope, own_statistics, group, backend,
                need_x, need_w or need_b,
            )  # fmt: skip
        return (
            dx if need_x else None,
            None,
            None,
            cast_grad(dweight, dtype_of(weight)) if need_w else None,
            cast_grad(dbias, dtype_of(bias)) if need_b else None,
            *(None,) * 6,
        )


# ---------------------------------------------------------------------------------------
# Entry points.


def batch_stats(x: Tensor, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean (C,), var (C,))`` of ``x (N, C, *)``: biased variance, in the
    accumulation dtype (float64 for float64 input, else float32), not differentiable.
    An empty ``x`` (``N = 0``) gives zeros."""
    return _stats(x.detach(), backend)


def bn_apply(
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
    own_statistics: bool = True,
    group_name: str | None = None,
    backend: str | None = None,
) -> Tensor:
    """``y = act((x - mean) * invstd * weight + bias)`` for ``x (N, C, *)``, per channel.

    Args:
        mean, invstd: ``(C,)`` statistics in the accumulation dtype, no gradient.
        weight, bias: ``(C,)`` or None; differentiable.
        eps: the epsilon behind ``invstd`` (used only by the double-backward recompute).
        act, negative_slope: the fused activation (:data:`normkit._shared.ACTIVATIONS`).
        own_statistics: ``mean``/``invstd`` are the statistics of ``x`` itself (training
            backward); False: they are constants (inference, frozen statistics).
        group_name: a process group's name: the statistics were merged over that group and
            the backward sums ``sum(dy)``, ``sum(dy * x_hat)`` and the count over it.
        backend: force a backend for the primitives.

    Returns a fresh ``y`` of ``x``'s shape, dtype and layout.
    """
    if not needs_autograd(x, weight, bias):
        return _apply(x, mean, invstd, weight, bias, act, negative_slope, backend)
    return _BatchNormApplyFn.apply(
        x, mean, invstd, weight, bias, eps, act, negative_slope, own_statistics, group_name, backend
    )
