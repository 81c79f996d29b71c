"""Layer and RMS normalization on the numba kernels: the registered ops, their autograd, and
the backend functions of the op contract.

Ops (``x (*, *normalized_shape)`` seen as ``R`` rows of ``D = prod(normalized_shape)``
values; statistics ``(R,)`` in x's dtype)::

    row_norm_forward(x, features, weight, bias, eps, center) -> (y, mean, var)
    row_norm_backward(grad, x, features, weight, mean, var, eps, center) -> (dx, dweight, dbias)

Per row, ``x_hat = (x - mean) * rstd`` (LayerNorm, ``center``) or ``x * rstd`` with ``var``
the mean square (RMSNorm, ``mean = 0``); ``g_hat = grad * w``::

    y  = x_hat * w + b
    dx = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))      # center
    dx = rstd * (g_hat - x_hat * mean(g_hat * x_hat))                     # no center
    dweight = sum_rows(grad * x_hat);  dbias = sum_rows(grad)

Outputs have torch's memory format: contiguous for LayerNorm; for RMSNorm channels_last
inputs stay channels_last, everything else is contiguous.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normkit._shared import per_channel_format
from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_backend
from normkit.backends._arrays import contiguous, vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd


def _rows(t: Tensor, features: int) -> Tensor:
    return t.reshape(-1, features)


def _format(x: Tensor, center: bool) -> torch.memory_format:
    return torch.contiguous_format if center else per_channel_format(x)


def _output(x: Tensor, center: bool) -> tuple[Tensor, Tensor]:
    """The output tensor (torch's format) and a contiguous buffer the kernel writes."""
    fmt = _format(x, center)
    out = torch.empty(x.shape, dtype=x.dtype, memory_format=fmt)
    if fmt is torch.contiguous_format:
        return out, out
    return out, torch.empty(x.shape, dtype=x.dtype)


def _out_like(x: Tensor, center: bool) -> Tensor:
    return torch.empty_like(x, memory_format=_format(x, center))


def _forward_impl(x, features, weight, bias, eps, center):
    dt = x.dtype
    rows = x.numel() // features if features else 0
    out, buffer = _output(x, center)
    mean = torch.empty(rows, dtype=dt)
    var = torch.empty(rows, dtype=dt)
    rt.kernel("row_forward", "rows", dt)(
        contiguous(_rows(x.detach(), features), dt), _rows(buffer, features).numpy(),
        vector(weight, dt), vector(bias, dt), eps, center, mean.numpy(), var.numpy(),
        rt.threads(x.numel()),
    )  # fmt: skip
    if buffer is not out:
        out.copy_(buffer)
    return out, mean, var


def _forward_fake(x, features, weight, bias, eps, center):
    rows = x.numel() // features if features else 0
    return _out_like(x, center), x.new_empty(rows), x.new_empty(rows)


row_norm_forward = define(
    "row_norm_forward(Tensor x, int features, Tensor? weight, Tensor? bias, float eps, "
    "bool center) -> (Tensor, Tensor, Tensor)",
    _forward_impl,
    _forward_fake,
)


def _backward_impl(grad, x, features, weight, mean, var, eps, center):
    dt = x.dtype
    out, buffer = _output(x, center)
    dweight = torch.empty(features, dtype=dt)
    dbias = torch.empty(features, dtype=dt)
    rt.kernel("row_backward", "rows", dt)(
        contiguous(_rows(grad.detach(), features), dt), contiguous(_rows(x.detach(), features), dt),
        _rows(buffer, features).numpy(), vector(weight, dt), vector(mean, dt), vector(var, dt),
        eps, center, dweight.numpy(), dbias.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    if buffer is not out:
        out.copy_(buffer)
    return out, dweight if weight is not None else dweight[:0].clone(), dbias


def _backward_fake(grad, x, features, weight, mean, var, eps, center):
    return (
        _out_like(x, center),
        x.new_empty(features if weight is not None else 0),
        x.new_empty(features),
    )


row_norm_backward = define(
    "row_norm_backward(Tensor grad, Tensor x, int features, Tensor? weight, Tensor mean, "
    "Tensor var, float eps, bool center) -> (Tensor, Tensor, Tensor)",
    _backward_impl,
    _backward_fake,
)


def _reference(x, normalized_shape, weight, bias, eps, center):
    if center:
        return torch_backend.layer_norm(x, normalized_shape, weight, bias, eps)
    return torch_backend.rms_norm(x, normalized_shape, weight, eps)


class _RowNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps, center):
        features = _features(x, normalized_shape)
        y, mean, var = row_norm_forward(x, features, weight, bias, eps, center)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.options = (normalized_shape, features, eps, center)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:
            return (None,) * 6
        x, weight, bias, mean, var = ctx.saved_tensors
        normalized_shape, features, eps, center = ctx.options
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return _reference(x, normalized_shape, weight, bias, eps, center)

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = row_norm_backward(
                grad, x, features, weight, mean, var, eps, center
            )
            dweight = dweight.reshape(normalized_shape) if weight is not None else None
            dbias = dbias.reshape(normalized_shape)
        return (
            dx if needs[0] else None,
            None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
            None,
        )


def _features(x: Tensor, normalized_shape: tuple[int, ...]) -> int:
    return math.prod(normalized_shape)


def _row_norm(x, normalized_shape, weight, bias, eps, center):
    if needs_autograd(x, weight, bias):
        return _RowNorm.apply(x, normalized_shape, weight, bias, eps, center)[0]
    return row_norm_forward(x, _features(x, normalized_shape), weight, bias, eps, center)[0]


def layer_norm(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """See :func:`normkit.backends.torch_backend.layer_norm`."""
    return _row_norm(x, normalized_shape, weight, bias, eps, True)


def rms_norm(
    x: Tensor, normalized_shape: tuple[int, ...], weight: Tensor | None, eps: float
) -> Tensor:
    """See :func:`normkit.backends.torch_backend.rms_norm`."""
    return _row_norm(x, normalized_shape, weight, None, eps, False)
