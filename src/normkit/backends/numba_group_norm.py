"""Group and instance normalization on the numba kernels: the registered ops, their
autograd, and the backend functions of the op contract.

Ops (``x (N, C, *)`` with ``C = G * K``; statistics ``(N, G)`` in x's dtype)::

    group_norm_forward(x, groups, weight, bias, eps) -> (y, mean, var)
    group_norm_backward(grad, x, groups, weight, mean, var, eps) -> (dx, dweight, dbias)

Per group ``(n, g)`` of ``m = K * L`` values, ``x_hat = (x - mean) * rstd``::

    y  = x_hat * w[c] + b[c]
    dx = rstd * (w[c] * grad - sum(w * grad) / m - x_hat * sum(w * grad * x_hat) / m)
    dweight[c] = sum_n sum(grad * x_hat);  dbias[c] = sum_n sum(grad)

Instance normalization is ``groups = C``. The kernels take C-contiguous data; a
channels_last input is computed on a contiguous copy and the output returned channels_last,
as torch's group norm does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_backend
from normkit.backends._arrays import contiguous, vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd
from normkit.backends.running import running_stats_update


def _flat(t: Tensor) -> Tensor:
    """A contiguous ``(N, C, L)`` tensor of ``t``'s data."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def _restore_format(out: Tensor, like: Tensor) -> Tensor:
    fmt = rt.per_channel_format(like)
    return out if fmt is torch.contiguous_format else out.contiguous(memory_format=fmt)


def _forward_impl(x, groups, weight, bias, eps):
    dt = x.dtype
    n = x.shape[0]
    y = torch.empty(x.shape, dtype=dt)
    mean = torch.empty((n, groups), dtype=dt)
    var = torch.empty((n, groups), dtype=dt)
    rt.kernel("gn_forward", "ncl", dt)(
        contiguous(_flat(x.detach()), dt), _flat(y).numpy(), groups, vector(weight, dt),
        vector(bias, dt), eps, mean.view(-1).numpy(), var.view(-1).numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return _restore_format(y, x), mean, var


def _out_like(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=rt.per_channel_format(x))


def _forward_fake(x, groups, weight, bias, eps):
    stats = (x.shape[0], groups)
    return _out_like(x), x.new_empty(stats), x.new_empty(stats)


group_norm_forward = define(
    "group_norm_forward(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps) "
    "-> (Tensor, Tensor, Tensor)",
    _forward_impl,
    _forward_fake,
)


def _backward_impl(grad, x, groups, weight, mean, var, eps):
    dt = x.dtype
    c = x.shape[1]
    dx = torch.empty(x.shape, dtype=dt)
    dweight = torch.empty(c, dtype=dt)
    dbias = torch.empty(c, dtype=dt)
    rt.kernel("gn_backward", "ncl", dt)(
        contiguous(_flat(grad.detach()), dt), contiguous(_flat(x.detach()), dt),
        _flat(dx).numpy(), groups, vector(weight, dt), vector(mean, dt), vector(var, dt), eps,
        dweight.numpy(), dbias.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return _restore_format(dx, x), dweight if weight is not None else dweight[:0].clone(), dbias


def _backward_fake(grad, x, groups, weight, mean, var, eps):
    c = x.shape[1]
    return _out_like(x), x.new_empty(c if weight is not None else 0), x.new_empty(c)


group_norm_backward = define(
    "group_norm_backward(Tensor grad, Tensor x, int groups, Tensor? weight, Tensor mean, "
    "Tensor var, float eps) -> (Tensor, Tensor, Tensor)",
    _backward_impl,
    _backward_fake,
)


class _GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps):
        y, mean, var = group_norm_forward(x, groups, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.options = (groups, eps)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:
            return (None,) * 5
        x, weight, bias, mean, var = ctx.saved_tensors
        groups, eps = ctx.options
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_backend.group_norm(x, groups, weight, bias, eps)

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = group_norm_backward(grad, x, groups, weight, mean, var, eps)
        return (
            dx if needs[0] else None,
            None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
        )


def _normalize(x, groups, weight, bias, eps):
    if needs_autograd(x, weight, bias):
        return _GroupNorm.apply(x, groups, weight, bias, eps)
    return group_norm_forward(x, groups, weight, bias, eps)


def group_norm(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """See :func:`normkit.backends.torch_backend.group_norm`."""
    return _normalize(x, num_groups, weight, bias, eps)[0]


def instance_norm_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    name: str = "instance_norm",
) -> Tensor:
    """See :func:`normkit.backends.torch_backend.instance_norm_train`."""
    # torch's instance norm returns a contiguous output whatever the input's format.
    y, mean, var = _normalize(x.contiguous(), x.shape[1], weight, bias, eps)
    if running_mean is not None or running_var is not None:
        count = x.numel() // (x.shape[0] * x.shape[1])
        running_stats_update(
            running_mean, running_var, None, mean.mean(0), var.mean(0), count, momentum, name
        )
    return y
