"""Differentiable building blocks of the BatchNorm variants, composed from the BN primitives.

Every variant (batch renorm, ghost batches, fused activation, sync BN) is two steps:

1. :func:`batch_stats` -- per-channel ``(mean, var)`` of ``x (N, C, L)`` (biased variance,
   accumulation dtype), not differentiable; the variant then post-processes them
   (sync BN merges them across processes, batch renorm derives ``r`` and ``d``).
2. :func:`bn_apply` -- ``y = act((x - mean) * invstd * weight + bias)``, differentiable in
   ``x``, ``weight`` and ``bias``. With ``batch_stats=True`` the backward treats
   ``mean``/``invstd`` as the statistics of ``x`` itself (the full BatchNorm backward)::

       dy          = grad * act'(pre)
       sum_dy      = sum(dy),  sum_dy_xhat = sum(dy * x_hat)        # = dbias, dweight
       dx          = weight * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)

   and with ``batch_stats=False`` as constants (running or frozen statistics), so
   ``dx = dy * weight * invstd``. With ``group_name`` (sync BN), ``sum_dy``, ``sum_dy_xhat``
   and ``n`` are summed over the process group before ``dx`` (see
   :mod:`normkit.autograd.sync`); ``dweight``/``dbias`` stay this process's own share.

Batch renorm folds its stop-gradient ``r, d`` into ``weight``/``bias`` *before* calling
:func:`bn_apply` (``weight' = weight * r``, ``bias' = bias + weight * d``), so autograd's
chain rule gives ``dweight = r * sum_dy_xhat + d * sum_dy``: nothing renorm-specific here.

Eager calls run :class:`torch.autograd.Function` subclasses; under ``torch.compile`` the same
code runs as ``torch.library`` custom ops (``normkit::bn_batch_stats``, ``normkit::bn_apply``,
``normkit::bn_apply_backward``) with fake implementations and registered autograd. Double
backward (``create_graph=True``) recomputes the forward with the composite ``"torch"``
backend and differentiates it (statistics included), as :mod:`normkit.autograd.ops` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.autograd import sync
from normkit.autograd._common import cast_grad, differentiable_grads, dtype_of, with_strides_of
from normkit.backends import get_impl, torch_ops
from normkit.backends.torch_ops import accumulation_dtype

# ---------------------------------------------------------------------------------------
# The computation, shared by the eager Function and the custom ops.


def _stats(x: Tensor, backend: str | None) -> tuple[Tensor, Tensor]:
    if x.numel() == 0:  # an empty shard (sync BN): no statistics, merged with weight 0
        acc = accumulation_dtype(x.dtype)
        return x.new_zeros(x.shape[1], dtype=acc), x.new_zeros(x.shape[1], dtype=acc)
    return get_impl("batch_norm_stats", x, backend)(x)


def _apply(x, mean, invstd, weight, bias, act, negative_slope, backend) -> Tensor:
    if x.numel() == 0:
        return torch.empty_like(x)
    impl = get_impl("batch_norm_elemt", x, backend)
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
    batch_stats: bool,
    group_name: str | None,
    backend: str | None,
    need_dx: bool,
    need_params: bool = True,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """First-order gradients ``(dx or None, sum_dy_xhat, sum_dy)`` (the last two are the
    local ``dweight``/``dbias`` before any cast). With fixed statistics and no parameter
    gradient wanted (frozen affine), the reduction pass is skipped (sums returned as 0)."""
    channels = x.shape[1]
    if x.numel() == 0 or not (batch_stats or need_params):
        acc = accumulation_dtype(x.dtype)
        sum_dy = x.new_zeros(channels, dtype=acc)
        sum_dy_xhat = x.new_zeros(channels, dtype=acc)
    else:
        reduce = get_impl("batch_norm_backward_reduce", x, backend)
        sum_dy, sum_dy_xhat = reduce(grad, x, mean, invstd, weight, bias, act, negative_slope)
    if not need_dx:
        return None, sum_dy_xhat, sum_dy
    total_dy, total_dy_xhat, count = sum_dy, sum_dy_xhat, x.shape[0] * x.shape[2]
    if batch_stats and group_name is not None:
        # Every member must join this collective, an empty shard included.
        total_dy, total_dy_xhat, count = sync.all_reduce_grad_sums(
            sum_dy, sum_dy_xhat, count, group_name
        )
    if x.numel() == 0:
        return torch.empty_like(x), sum_dy_xhat, sum_dy
    elemt = get_impl("batch_norm_backward_elemt", x, backend)
    if batch_stats:
        dx = elemt(
            grad, x, mean, invstd, weight, bias, total_dy, total_dy_xhat, count, act,
            negative_slope,
        )  # fmt: skip
    else:
        dx = elemt(grad, x, mean, invstd, weight, bias, None, None, 0, act, negative_slope)
    return dx, sum_dy_xhat, sum_dy


def _composite_forward(mean, invstd, eps, act, negative_slope, batch_stats, group_name):
    """The differentiable forward used for double backward (statistics recomputed from x)."""

    def forward(x, weight, bias):
        m, s = mean, invstd
        if batch_stats:
            if group_name is not None:
                m, var = sync.differentiable_global_stats(x, group_name)
            else:
                m, var = torch_ops.batch_norm_stats(x)
            s = torch.rsqrt(var + eps)
        return torch_ops.batch_norm_elemt(x, m, s, weight, bias, act, negative_slope)

    return forward


# ---------------------------------------------------------------------------------------
# Eager mode.


class _BatchNormApplyFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, mean, invstd, weight, bias, eps, act, negative_slope, batch_stats, group, backend
    ):
        ctx.save_for_backward(x, mean, invstd, weight, bias)
        ctx.options = (eps, act, negative_slope, batch_stats, group, backend)
        return _apply(x, mean, invstd, weight, bias, act, negative_slope, backend)

    @staticmethod
    def backward(ctx, grad):
        x, mean, invstd, weight, bias = ctx.saved_tensors
        eps, act, slope, batch_stats, group, backend = ctx.options
        need_x, need_w, need_b = (ctx.needs_input_grad[i] for i in (0, 3, 4))
        if torch.is_grad_enabled():
            forward = _composite_forward(mean, invstd, eps, act, slope, batch_stats, group)
            dx, dweight, dbias = differentiable_grads(
                forward, (x, weight, bias), grad, (need_x, need_w, need_b)
            )
        else:
            dx, dweight, dbias = _apply_backward(
                grad, x, mean, invstd, weight, bias, act, slope, batch_stats, group, backend,
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
# torch.compile: custom ops.


@torch.library.custom_op("normkit::bn_batch_stats", mutates_args=())
def _stats_op(x: Tensor, backend: str | None) -> tuple[Tensor, Tensor]:
    mean, var = _stats(x, backend)
    return mean.clone(), var.clone()


@_stats_op.register_fake
def _(x, backend):
    acc = accumulation_dtype(x.dtype)
    return x.new_empty(x.shape[1], dtype=acc), x.new_empty(x.shape[1], dtype=acc)


@torch.library.custom_op("normkit::bn_apply", mutates_args=())
def _apply_op(
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str,
    negative_slope: float,
    batch_stats: bool,
    group_name: str | None,
    backend: str | None,
) -> Tensor:
    return with_strides_of(_apply(x, mean, invstd, weight, bias, act, negative_slope, backend), x)


@_apply_op.register_fake
def _(x, mean, invstd, weight, bias, eps, act, negative_slope, batch_stats, group_name, backend):
    return torch.empty_like(x)


@torch.library.custom_op("normkit::bn_apply_backward", mutates_args=())
def _apply_backward_op(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    act: str,
    negative_slope: float,
    batch_stats: bool,
    group_name: str | None,
    backend: str | None,
    need_dx: bool,
    need_params: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    dx, dweight, dbias = _apply_backward(
        grad, x, mean, invstd, weight, bias, act, negative_slope, batch_stats, group_name,
        backend, need_dx, need_params,
    )  # fmt: skip
    dx = with_strides_of(dx, x) if dx is not None else x.new_empty(0)
    return dx, dweight.clone(), dbias.clone()


@_apply_backward_op.register_fake
def _(
    grad, x, mean, invstd, weight, bias, act, slope, batch_stats, group, backend, need_dx, need_p
):
    acc = accumulation_dtype(x.dtype)
    channels = x.shape[1]
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    return dx, x.new_empty(channels, dtype=acc), x.new_empty(channels, dtype=acc)


def _apply_setup(ctx, inputs, output):
    x, mean, invstd, weight, bias, _eps, act, slope, batch_stats, group_name, backend = inputs
    ctx.save_for_backward(x, mean, invstd, weight, bias)
    ctx.options = (act, slope, batch_stats, group_name, backend)
    ctx.dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)


def _apply_op_backward(ctx, grad):
    x, mean, invstd, weight, bias = ctx.saved_tensors
    act, slope, batch_stats, group_name, backend = ctx.options
    need_x = ctx.needs_input_grad[0]
    need_params = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
    dx, dweight, dbias = _apply_backward_op(
        grad, x, mean, invstd, weight, bias, act, slope, batch_stats, group_name, backend,
        need_x, need_params,
    )  # fmt: skip
    w_dtype, b_dtype = ctx.dtypes
    return (
        dx if need_x else None,
        None,
        None,
        None if w_dtype is None else dweight.to(w_dtype),
        None if b_dtype is None else dbias.to(b_dtype),
        *(None,) * 6,
    )


_apply_op.register_autograd(_apply_op_backward, setup_context=_apply_setup)


# ---------------------------------------------------------------------------------------
# Public entry points of this bridge.


def batch_stats(x: Tensor, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean (C,), var (C,))`` of ``x (N, C, L)``: biased variance, in the
    accumulation dtype (float64 for float64 input, else float32), not differentiable.
    An empty ``x`` (``N = 0``) gives zeros."""
    x = x.detach()  # statistics are inputs of bn_apply, whose backward accounts for them
    if torch.compiler.is_compiling():
        return _stats_op(x, backend)
    return _stats(x, backend)


def bn_apply(
    x: Tensor,
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
    """``y = act((x - mean) * invstd * weight + bias)`` for ``x (N, C, L)``, per channel.

    Args:
        mean, invstd: ``(C,)`` statistics in the accumulation dtype, no gradient.
        weight, bias: ``(C,)`` or None; differentiable.
        eps: the epsilon behind ``invstd`` (used only by the double-backward recompute).
        act, negative_slope: the fused activation (``torch_ops.ACTIVATIONS``).
        batch_stats: ``mean``/``invstd`` are the statistics of ``x`` (training backward);
            False: they are constants (inference, frozen statistics).
        group_name: a process group's name: the statistics were merged over that group and
            the backward sums ``sum(dy)``, ``sum(dy * x_hat)`` and the count over it.
        backend: force a backend for the primitives.

    Returns ``y (N, C, L)`` with ``x``'s dtype and layout.
    """
    if torch.compiler.is_compiling():
        return _apply_op(
            x, mean, invstd, weight, bias, eps, act, negative_slope, batch_stats, group_name,
            backend,
        )  # fmt: skip
    needs = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias)
    )
    if not needs:
        return _apply(x, mean, invstd, weight, bias, act, negative_slope, backend)
    return _BatchNormApplyFn.apply(
        x, mean, invstd, weight, bias, eps, act, negative_slope, batch_stats, group_name, backend
    )
