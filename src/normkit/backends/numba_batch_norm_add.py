"""BatchNorm + residual add + activation on the numba kernels (:mod:`normkit.kernels.batch_norm_add`):
the registered ops, their autograd, and the two backend functions of the contract in
:mod:`normkit.backends.torch_batch_norm_add`.

Ops (``torch.ops.normkit.*``; ``x`` and ``residual`` are the layer's ``(N, C, *)`` tensors,
outputs fresh tensors of that shape, statistics ``(C,)`` in x's dtype, ``var`` biased)::

    batch_norm_add_forward(x, residual, weight, bias, running_mean, running_var,
                           num_batches_tracked, momentum, eps, act, name) -> (y, mean, var)
        # y = act(BN(x) + residual); the running statistics, when given, updated in place
        # (the rule of normkit.backends.running)
    batch_norm_add_eval_forward(x, residual, weight, bias, mean, var, eps, act) -> y
    batch_norm_add_relu_backward(grad, y, x, weight, mean, var, eps, batch_statistics)
        -> (dx, dresidual, dweight, dbias)      # dweight is empty when weight is None

Backward of ``y = relu(BN(x) + residual)``: ``dresidual = grad * [y > 0]`` and BatchNorm's
backward of that same masked gradient (one pass computes the mask, writes ``dresidual`` and
sums it; one pass writes ``dx``). For ``act="identity"``, ``dresidual = grad`` and ``dx`` is
BatchNorm's backward of ``grad`` (:data:`normkit.backends.numba_batch_norm.batch_norm_backward`).

One :class:`torch.autograd.Function` serves both modes, eager and under ``torch.compile``;
it saves the output ``y`` (what the ReLU it replaces saves), not the residual. A backward asked
to build a graph (double backward) differentiates torch's own BatchNorm with the same
(constant) ReLU mask, so higher derivatives are exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_backend
from normkit.backends._arrays import PerChannel, vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd
from normkit.backends.numba_batch_norm import batch_norm_backward
from normkit.backends.running import update_running_stats


def _out_like(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=rt.per_channel_format(x))


def _stat_like(x: Tensor) -> Tensor:
    return x.new_empty(x.shape[1])


def _forward_impl(
    x, residual, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps,
    act, name,
):  # fmt: skip
    bn = PerChannel(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    rt.kernel("bn_add_forward", bn.layout, dt)(
        bn.array, bn.like(residual), y_a, vector(weight, dt), vector(bias, dt), eps,
        rt.act_code(act), mean_a, var_a, rt.threads(x.numel()),
    )  # fmt: skip
    if running_mean is not None or running_var is not None:
        update_running_stats(
            running_mean, running_var, num_batches_tracked, mean, var, bn.rows, momentum, name
        )
    return y, mean, var


def _forward_fake(x, residual, weight, bias, running_mean, running_var, nbt, momentum, eps, act,
                  name):  # fmt: skip
    return _out_like(x), _stat_like(x), _stat_like(x)


batch_norm_add_forward = define(
    "batch_norm_add_forward(Tensor x, Tensor residual, Tensor? weight, Tensor? bias, "
    "Tensor(a!)? running_mean, Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, "
    "float? momentum, float eps, str act, str name) -> (Tensor, Tensor, Tensor)",
    _forward_impl,
    _forward_fake,
)


def _eval_forward_impl(x, residual, weight, bias, running_mean, running_var, eps, act):
    bn = PerChannel(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    rt.kernel("bn_add_eval_forward", bn.layout, dt)(
        bn.array, bn.like(residual), y_a, vector(running_mean, dt), vector(running_var, dt),
        vector(weight, dt), vector(bias, dt), eps, rt.act_code(act), rt.threads(x.numel()),
    )  # fmt: skip
    return y


batch_norm_add_eval_forward = define(
    "batch_norm_add_eval_forward(Tensor x, Tensor residual, Tensor? weight, Tensor? bias, "
    "Tensor running_mean, Tensor running_var, float eps, str act) -> Tensor",
    _eval_forward_impl,
    lambda x, residual, weight, bias, running_mean, running_var, eps, act: _out_like(x),
)


def _relu_backward_impl(grad, y, x, weight, mean, var, eps, batch_statistics):
    bn = PerChannel(x)
    dt = bn.dtype
    dz, dz_a = bn.empty()
    dx, dx_a = bn.empty()
    dweight, dweight_a = bn.stat()
    dbias, dbias_a = bn.stat()
    rt.kernel("bn_add_relu_backward", bn.layout, dt)(
        bn.like(grad), bn.like(y), bn.array, dz_a, dx_a, vector(weight, dt), vector(mean, dt),
        vector(var, dt), eps, batch_statistics, dweight_a, dbias_a, rt.threads(x.numel()),
    )  # fmt: skip
    return dx, dz, dweight if weight is not None else torch.empty(0, dtype=dt), dbias


def _relu_backward_fake(grad, y, x, weight, mean, var, eps, batch_statistics):
    channels = x.shape[1] if weight is not None else 0
    return _out_like(x), _out_like(x), x.new_empty(channels), _stat_like(x)


batch_norm_add_relu_backward = define(
    "batch_norm_add_relu_backward(Tensor grad, Tensor y, Tensor x, Tensor? weight, "
    "Tensor mean, Tensor var, float eps, bool batch_statistics) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    _relu_backward_impl,
    _relu_backward_fake,
)


class _BatchNormAddAct(torch.autograd.Function):
    """``act(BN(x) + residual)``, training (batch statistics) or evaluation (running ones)."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, running_mean, running_var, nbt, training,
                momentum, eps, act, name):  # fmt: skip
        if training:
            y, mean, var = batch_norm_add_forward(
                x, residual, weight, bias, running_mean, running_var, nbt, momentum, eps, act,
                name,
            )  # fmt: skip
        else:
            y = batch_norm_add_eval_forward(
                x, residual, weight, bias, running_mean, running_var, eps, act
            )
            mean, var = running_mean, running_var
        ctx.save_for_backward(x, weight, bias, mean, var, y if act == "relu" else None)
        ctx.options = (training, eps, act)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, var, y = ctx.saved_tensors
        training, eps, act = ctx.options
        needs = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():
            dx, dres, dweight, dbias = _differentiable_backward(
                grad, x, weight, bias, mean, var, y, training, eps, needs
            )
        elif act == "relu":
            dx, dres, dweight, dbias = batch_norm_add_relu_backward(
                grad, y, x, weight, mean, var, eps, training
            )
        else:
            dx, dweight, dbias = batch_norm_backward(
                grad, x, weight, bias, mean, var, eps, "identity", 0.01, training
            )
            dres = grad
        return (
            dx if needs[0] else None,
            dres if needs[1] else None,
            cast_grad(dweight, dtype_of(weight)) if needs[2] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[3] else None,
            *(None,) * 8,
        )


def _differentiable_backward(grad, x, weight, bias, mean, var, y, training, eps, needs):
    """The gradients as a graph: torch's BatchNorm, plus a stand-in residual (the output is
    linear in it), through the saved ReLU mask ``y > 0`` (a constant almost everywhere)."""
    mask = y > 0 if y is not None else None

    def forward(x, residual, weight, bias):
        if training:
            out = torch_backend.batch_norm_train(
                x, weight, bias, None, None, None, None, eps, "identity", 0.01
            )
        else:
            out = torch_backend.batch_norm_eval(x, weight, bias, mean, var, eps)
        if residual is not None:
            out = out + residual
        return torch.where(mask, out, 0.0) if mask is not None else out

    stand_in = torch.zeros_like(x, requires_grad=True) if needs[1] else None
    return differentiable_grads(forward, (x, stand_in, weight, bias), grad, needs)


def batch_norm_add_train(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    eps: float,
    act: str = "relu",
    name: str = "batch_norm_add_act",
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_norm_add.batch_norm_add_train`."""
    if needs_autograd(x, residual, weight, bias):
        return _BatchNormAddAct.apply(
            x, residual, weight, bias, running_mean, running_var, num_batches_tracked, True,
            momentum, eps, act, name,
        )  # fmt: skip
    return batch_norm_add_forward(
        x, residual, weight, bias, running_mean, running_var, num_batches_tracked, momentum,
        eps, act, name,
    )[0]  # fmt: skip


def batch_norm_add_eval(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    act: str = "relu",
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_norm_add.batch_norm_add_eval`."""
    if needs_autograd(x, residual, weight, bias):
        return _BatchNormAddAct.apply(
            x, residual, weight, bias, running_mean, running_var, None, False, None, eps, act,
            "batch_norm_add_act",
        )  # fmt: skip
    return batch_norm_add_eval_forward(
        x, residual, weight, bias, running_mean, running_var, eps, act
    )
