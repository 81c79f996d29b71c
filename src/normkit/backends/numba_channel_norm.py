"""Channels-first layer normalization (``LayerNorm2d``) on the numba kernels: the registered
ops, their autograd, and the backend function of the op contract.

Ops (``x (N, C, *)``, normalized over ``C`` at each of the ``N * L`` positions; statistics
``(N * L,)`` in x's dtype)::

    layer_norm_2d_forward(x, weight, bias, eps) -> (y, mean, var)
    layer_norm_2d_backward(grad, x, weight, mean, var, eps) -> (dx, dweight, dbias)

Both run LayerNorm's row kernels on the ``(N * L, C)`` rows of x with its channel dim
fastest (channels_last for 4-D): such an x is used as it is, any other is copied into that
layout once (the copy torch's ``layer_norm`` makes of the permuted tensor in timm's and
torchvision's ``LayerNorm2d``). Outputs are fresh tensors in that layout, which is the one
those modules return (the permute back of a contiguous ``(N, *, C)`` result), so the
layers after a converted ``LayerNorm2d`` see the strides they saw before.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit._shared import channels_last_empty
from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_backend
from normkit.backends._arrays import vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd


def _rows(t: Tensor):
    """The ``(N * L, C)`` rows of ``t`` (channel dim fastest) as an array, without a copy."""
    return t.numpy().transpose(0, *range(2, t.dim()), 1).reshape(-1, t.shape[1])


def _channels_fastest(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype`` with its channel dim fastest (a copy unless it already is)."""
    t = t.detach().to(dtype)
    if t.movedim(1, -1).is_contiguous():
        return t
    out = channels_last_empty(t)
    return out.copy_(t)


def _forward_impl(x, weight, bias, eps):
    x = _channels_fastest(x, x.dtype)
    dt = x.dtype
    positions = x.numel() // x.shape[1]
    y = channels_last_empty(x)
    mean = torch.empty(positions, dtype=dt)
    var = torch.empty(positions, dtype=dt)
    rt.kernel("row_forward", "rows", dt)(
        _rows(x), _rows(y), vector(weight, dt), vector(bias, dt), eps, True, mean.numpy(),
        var.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return y, mean, var


def _forward_fake(x, weight, bias, eps):
    positions = x.numel() // x.shape[1]
    return channels_last_empty(x), x.new_empty(positions), x.new_empty(positions)


layer_norm_2d_forward = define(
    "layer_norm_2d_forward(Tensor x, Tensor? weight, Tensor? bias, float eps) "
    "-> (Tensor, Tensor, Tensor)",
    _forward_impl,
    _forward_fake,
)


def _backward_impl(grad, x, weight, mean, var, eps):
    x = _channels_fastest(x, x.dtype)
    dt = x.dtype
    c = x.shape[1]
    g = _channels_fastest(grad, dt)
    dx = channels_last_empty(x)
    dweight = torch.empty(c, dtype=dt)
    dbias = torch.empty(c, dtype=dt)
    rt.kernel("row_backward", "rows", dt)(
        _rows(g), _rows(x), _rows(dx), vector(weight, dt), vector(mean, dt), vector(var, dt),
        eps, True, dweight.numpy(), dbias.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return dx, dweight if weight is not None else dweight[:0].clone(), dbias


def _backward_fake(grad, x, weight, mean, var, eps):
    c = x.shape[1]
    return channels_last_empty(x), x.new_empty(c if weight is not None else 0), x.new_empty(c)


layer_norm_2d_backward = define(
    "layer_norm_2d_backward(Tensor grad, Tensor x, Tensor? weight, Tensor mean, Tensor var, "
    "float eps) -> (Tensor, Tensor, Tensor)",
    _backward_impl,
    _backward_fake,
)


class _LayerNorm2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, var = layer_norm_2d_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:
            return (None,) * 4
        x, weight, bias, mean, var = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_backend.layer_norm_2d(x, weight, bias, ctx.eps)

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = layer_norm_2d_backward(grad, x, weight, mean, var, ctx.eps)
        return (
            dx if needs[0] else None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
        )


def layer_norm_2d(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """See :func:`normkit.backends.torch_backend.layer_norm_2d`."""
    if needs_autograd(x, weight, bias):
        return _LayerNorm2d.apply(x, weight, bias, eps)[0]
    return layer_norm_2d_forward(x, weight, bias, eps)[0]
