"""Channels-first layer normalization (``LayerNorm2d``) on the numba kernels: the registered
ops, their autograd, and the backend function of the op contract.

Ops (``x (N, C, *)``, normalized over ``C`` at each of the ``N * L`` positions; statistics
``(N * L,)`` in x's dtype)::

    layer_norm_2d_forward(x, weight, bias, eps) -> (y, mean, var)
    layer_norm_2d_backward(grad, x, weight, mean, var, eps) -> (dx, dweight, dbias)

A channels_last ``x`` already holds each position's ``C`` values contiguously: it runs as
the row kernels of LayerNorm on its ``(N * L, C)`` rows, with no copy. A contiguous (NCHW)
``x`` runs the channel kernels of :mod:`normkit.kernels.channel_norm`, which reduce across
channels in place: neither layout pays the two permute copies of ``permute -> layer_norm ->
permute``. Outputs are fresh tensors in x's format (channels_last or contiguous).
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit._shared import per_channel_format
from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_backend
from normkit.backends._arrays import vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd


def _arrays(t: Tensor, channels_last: bool):
    """``t`` as the kernel sees it: ``(N * L, C)`` rows or ``(N, C, L)``."""
    a = t.numpy()
    n, c = t.shape[0], t.shape[1]
    if channels_last:
        return a.transpose(0, *range(2, t.dim()), 1).reshape(-1, c)
    return a.reshape(n, c, -1)


def _prepare(x: Tensor) -> tuple[Tensor, bool]:
    fmt = per_channel_format(x)
    channels_last = fmt is not torch.contiguous_format
    return x.detach().contiguous(memory_format=fmt), channels_last


def _forward_impl(x, weight, bias, eps):
    x, channels_last = _prepare(x)
    dt = x.dtype
    positions = x.numel() // x.shape[1]
    y = torch.empty_like(x)
    mean = torch.empty(positions, dtype=dt)
    var = torch.empty(positions, dtype=dt)
    if channels_last:
        rt.kernel("row_forward", "rows", dt)(
            _arrays(x, True), _arrays(y, True), vector(weight, dt), vector(bias, dt), eps,
            True, mean.numpy(), var.numpy(), rt.threads(x.numel()),
        )  # fmt: skip
    else:
        rt.kernel("cn_forward", "ncl", dt)(
            _arrays(x, False), _arrays(y, False), vector(weight, dt), vector(bias, dt), eps,
            mean.numpy(), var.numpy(), rt.threads(x.numel()),
        )  # fmt: skip
    return y, mean, var


def _out_like(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=per_channel_format(x))


def _forward_fake(x, weight, bias, eps):
    positions = x.numel() // x.shape[1]
    return _out_like(x), x.new_empty(positions), x.new_empty(positions)


layer_norm_2d_forward = define(
    "layer_norm_2d_forward(Tensor x, Tensor? weight, Tensor? bias, float eps) "
    "-> (Tensor, Tensor, Tensor)",
    _forward_impl,
    _forward_fake,
)


def _backward_impl(grad, x, weight, mean, var, eps):
    x, channels_last = _prepare(x)
    dt = x.dtype
    c = x.shape[1]
    g = grad.detach().to(dt).contiguous(memory_format=per_channel_format(x))
    dx = torch.empty_like(x)
    dweight = torch.empty(c, dtype=dt)
    dbias = torch.empty(c, dtype=dt)
    name, layout = ("row_backward", "rows") if channels_last else ("cn_backward", "ncl")
    extra = (True,) if channels_last else ()
    rt.kernel(name, layout, dt)(
        _arrays(g, channels_last), _arrays(x, channels_last), _arrays(dx, channels_last),
        vector(weight, dt), vector(mean, dt), vector(var, dt), eps, *extra, dweight.numpy(),
        dbias.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return dx, dweight if weight is not None else dweight[:0].clone(), dbias


def _backward_fake(grad, x, weight, mean, var, eps):
    c = x.shape[1]
    return _out_like(x), x.new_empty(c if weight is not None else 0), x.new_empty(c)


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
