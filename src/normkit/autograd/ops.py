"""Differentiable entry points over the backend ops, for eager mode and ``torch.compile``.

Two ops cover the whole family:

* :func:`norm` (``kind`` = ``"batch"``, ``"group"`` or ``"row"``): normalize with the
  batch's own statistics; returns ``(y, mean, var)``, statistics non-differentiable.
* :func:`batch_norm_eval`: normalize with fixed (running) statistics.

Eager calls go through :class:`torch.autograd.Function` subclasses (cheapest dispatch);
under ``torch.compile`` the same computation runs as ``torch.library`` custom ops
(``normkit::norm_forward`` and friends) with fake implementations and registered autograd,
so graphs are not broken by the compiled kernels.

Double backward: when a graph of the gradient is requested (``create_graph=True``), the
backward recomputes the forward with the composite ``"torch"`` backend and differentiates
it with autograd, so second derivatives are exact (the slower path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from normkit.autograd._common import cast_grad, differentiable_grads, dtype_of, with_strides_of
from normkit.backends import get_impl, torch_ops
from normkit.backends.torch_ops import accumulation_dtype

_FORWARD_OPS = {
    "batch": "batch_norm_forward",
    "group": "group_norm_forward",
    "row": "row_norm_forward",
}
_BACKWARD_OPS = {
    "batch": "batch_norm_backward",
    "group": "group_norm_backward",
    "row": "row_norm_backward",
}


def _option_args(kind: str, option: int) -> tuple:
    """``option`` is the group count for ``"group"`` and the center flag for ``"row"``."""
    if kind == "group":
        return (option,)
    if kind == "row":
        return (bool(option),)
    return ()


def _forward(kind, x, weight, bias, eps, option, backend):
    impl = get_impl(_FORWARD_OPS[kind], x, backend)
    if kind == "group":
        return impl(x, option, weight, bias, eps)
    return impl(x, weight, bias, eps, *_option_args(kind, option))


def _backward(kind, grad, x, weight, mean, var, eps, option, backend):
    impl = get_impl(_BACKWARD_OPS[kind], x, backend)
    if kind == "group":
        return impl(grad, x, option, weight, mean, var, eps)
    return impl(grad, x, weight, mean, var, eps, *_option_args(kind, option))


def _reference_forward(kind: str, eps: float, option: int) -> Callable[..., Tensor]:
    """The differentiable composite forward (output only), for the double-backward path."""

    def forward(x, weight, bias):
        return _forward(kind, x, weight, bias, eps, option, "torch")[0]

    return forward


def _needs_autograd(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------
# Eager mode: autograd.Function.


class _NormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kind, x, weight, bias, eps, option, backend):
        y, mean, var = _forward(kind, x, weight, bias, eps, option, backend)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.kind, ctx.eps, ctx.option, ctx.backend = kind, eps, option, backend
        ctx.mark_non_differentiable(mean, var)
        # The statistics never get a gradient: do not build zero tensors for them.
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:  # only the statistics were used: nothing flows back
            return (None,) * 7
        x, weight, bias, mean, var = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:4]
        if torch.is_grad_enabled():
            forward = _reference_forward(ctx.kind, ctx.eps, ctx.option)
            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = _backward(
                ctx.kind, grad, x, weight, mean, var, ctx.eps, ctx.option, ctx.backend
            )
        return (
            None,
            dx if needs[0] else None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
            None,
            None,
        )


class _BatchNormEvalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, eps, backend):
        impl = get_impl("batch_norm_eval_forward", x, backend)
        y = impl(x, running_mean, running_var, weight, bias, eps)
        ctx.save_for_backward(x, running_mean, running_var, weight, bias)
        ctx.eps, ctx.backend = eps, backend
        return y

    @staticmethod
    def backward(ctx, grad):
        x, running_mean, running_var, weight, bias = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_ops.batch_norm_eval_forward(
                    x, running_mean, running_var, weight, bias, ctx.eps
                )

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            impl = get_impl("batch_norm_eval_backward", x, ctx.backend)
            dx, dweight, dbias = impl(grad, x, running_mean, running_var, weight, ctx.eps)
        return (
            dx if needs[0] else None,
            None,
            None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
            None,
        )


# ---------------------------------------------------------------------------------------
# torch.compile: custom ops with fake implementations and registered autograd.


def _stat_shape(kind: str, x: Tensor, option: int) -> tuple[int, ...]:
    if kind == "batch":
        return (x.shape[1],)
    if kind == "group":
        return (x.shape[0], option)
    return (x.shape[0],)


def _param_grad_or_empty(grad: Tensor | None, x: Tensor) -> Tensor:
    return grad if grad is not None else x.new_empty(0)


@torch.library.custom_op("normkit::norm_forward", mutates_args=())
def _norm_forward_op(
    kind: str,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    option: int,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    y, mean, var = _forward(kind, x, weight, bias, eps, option, backend)
    return with_strides_of(y, x), mean.clone(), var.clone()


@_norm_forward_op.register_fake
def _(kind, x, weight, bias, eps, option, backend):
    acc = accumulation_dtype(x.dtype)
    shape = _stat_shape(kind, x, option)
    return torch.empty_like(x), x.new_empty(shape, dtype=acc), x.new_empty(shape, dtype=acc)


@torch.library.custom_op("normkit::norm_backward", mutates_args=())
def _norm_backward_op(
    kind: str,
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    option: int,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    dx, dweight, dbias = _backward(kind, grad, x, weight, mean, var, eps, option, backend)
    return with_strides_of(dx, x), _param_grad_or_empty(dweight, x), dbias


@_norm_backward_op.register_fake
def _(kind, grad, x, weight, mean, var, eps, option, backend):
    acc = accumulation_dtype(x.dtype)
    channels = x.shape[-1] if kind == "row" else x.shape[1]
    dweight = x.new_empty(channels if weight is not None else 0, dtype=acc)
    return torch.empty_like(x), dweight, x.new_empty(channels, dtype=acc)


def _norm_setup(ctx, inputs, output):
    kind, x, weight, bias, eps, option, backend = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.kind, ctx.eps, ctx.option, ctx.backend = kind, eps, option, backend
    ctx.bias_dtype = dtype_of(bias)


def _norm_op_backward(ctx, grad, _grad_mean, _grad_var):
    x, weight, mean, var = ctx.saved_tensors
    dx, dweight, dbias = _norm_backward_op(
        ctx.kind, grad, x, weight, mean, var, ctx.eps, ctx.option, ctx.backend
    )
    return (
        None,
        dx,
        cast_grad(dweight, dtype_of(weight)),
        cast_grad(dbias, ctx.bias_dtype),
        None,
        None,
        None,
    )


_norm_forward_op.register_autograd(_norm_op_backward, setup_context=_norm_setup)


@torch.library.custom_op("normkit::batch_norm_eval_forward", mutates_args=())
def _bn_eval_forward_op(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    backend: str | None,
) -> Tensor:
    impl = get_impl("batch_norm_eval_forward", x, backend)
    return with_strides_of(impl(x, running_mean, running_var, weight, bias, eps), x)


@_bn_eval_forward_op.register_fake
def _(x, running_mean, running_var, weight, bias, eps, backend):
    return torch.empty_like(x)


@torch.library.custom_op("normkit::batch_norm_eval_backward", mutates_args=())
def _bn_eval_backward_op(
    grad: Tensor,
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    eps: float,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    impl = get_impl("batch_norm_eval_backward", x, backend)
    dx, dweight, dbias = impl(grad, x, running_mean, running_var, weight, eps)
    return with_strides_of(dx, x), _param_grad_or_empty(dweight, x), dbias


@_bn_eval_backward_op.register_fake
def _(grad, x, running_mean, running_var, weight, eps, backend):
    acc = accumulation_dtype(x.dtype)
    channels = x.shape[1]
    dweight = x.new_empty(channels if weight is not None else 0, dtype=acc)
    return torch.empty_like(x), dweight, x.new_empty(channels, dtype=acc)


def _bn_eval_setup(ctx, inputs, output):
    x, running_mean, running_var, weight, bias, eps, backend = inputs
    ctx.save_for_backward(x, running_mean, running_var, weight)
    ctx.eps, ctx.backend, ctx.bias_dtype = eps, backend, dtype_of(bias)


def _bn_eval_op_backward(ctx, grad):
    x, running_mean, running_var, weight = ctx.saved_tensors
    dx, dweight, dbias = _bn_eval_backward_op(
        grad, x, running_mean, running_var, weight, ctx.eps, ctx.backend
    )
    return (
        dx,
        None,
        None,
        cast_grad(dweight, dtype_of(weight)),
        cast_grad(dbias, ctx.bias_dtype),
        None,
        None,
    )


_bn_eval_forward_op.register_autograd(_bn_eval_op_backward, setup_context=_bn_eval_setup)


# ---------------------------------------------------------------------------------------
# Public entry points of the bridge.


def norm(
    kind: str,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    option: int = 0,
    backend: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalize ``x`` with its own statistics; returns ``(y, mean, var)``.

    ``kind``: ``"batch"`` (``x (N, C, L)``, stats ``(C,)``), ``"group"`` (``x (N, C, L)``,
    ``option`` groups, stats ``(N, G)``) or ``"row"`` (``x (R, D)``, ``option`` = center
    flag, stats ``(R,)``). ``var`` is the biased variance (mean square when not centered).
    """
    if torch.compiler.is_compiling():
        return _norm_forward_op(kind, x, weight, bias, eps, option, backend)
    if not _needs_autograd(x, weight, bias):
        return _forward(kind, x, weight, bias, eps, option, backend)
    return _NormFn.apply(kind, x, weight, bias, eps, option, backend)


def batch_norm_eval(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    backend: str | None = None,
) -> Tensor:
    """Normalize ``x (N, C, L)`` with fixed per-channel statistics (inference)."""
    if torch.compiler.is_compiling():
        return _bn_eval_forward_op(x, running_mean, running_var, weight, bias, eps, backend)
    if not _needs_autograd(x, weight, bias):
        impl = get_impl("batch_norm_eval_forward", x, backend)
        return impl(x, running_mean, running_var, weight, bias, eps)
    return _BatchNormEvalFn.apply(x, running_mean, running_var, weight, bias, eps, backend)
