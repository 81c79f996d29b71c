"""Batch normalization on the numba kernels: the registered ops, their autograd, and the
backend functions of the op contract (:mod:`normkit.backends.torch_backend`).

Ops (``torch.ops.normkit.*``; ``x`` is the layer's own ``(N, C, *)`` tensor, outputs are
fresh tensors of that shape; statistics ``(C,)`` in x's dtype, ``var`` biased)::

    batch_norm_forward(x, weight, bias, running_mean, running_var, num_batches_tracked,
                       momentum, eps, act, slope, name) -> (y, mean, var)
        # the running statistics, when given, updated in place (the rule of
        # normkit.backends.running)
    batch_norm_eval_forward(x, weight, bias, mean, var, eps, act, slope) -> y
    batch_norm_backward(grad, x, weight, bias, mean, var, eps, act, slope, own_statistics)
        -> (dx, dweight, dbias)           # dweight is empty when weight is None
    bn_stats(x) -> (mean, var)            # the primitives the variants compose
    bn_elemt(x, mean, invstd, weight, bias, act, slope) -> y
    bn_backward_reduce(grad, x, mean, invstd, weight, bias, act, slope) -> (sum_dy, sum_dy_xhat)
    bn_backward_elemt(grad, x, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count, act,
                      slope) -> dx

With ``y = act(x_hat * w + b)``, ``dy = grad * act'(pre)`` and ``n`` values per channel::

    dbias = sum(dy);  dweight = sum(dy * x_hat)
    dx = w * invstd * (dy - dbias / n - x_hat * dweight / n)     # batch statistics
    dx = w * invstd * dy                                          # fixed statistics (eval)

One :class:`torch.autograd.Function` per mode (training, evaluation) calls these ops, in
eager mode and under ``torch.compile`` alike (Dynamo traces the Function; the ops are
opaque nodes). A backward asked to build a graph (``create_graph=True``, double backward)
differentiates torch's own kernels instead, so higher derivatives are exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_backend
from normkit.backends._arrays import PerChannel, inverse_std, vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd
from normkit.backends.running import update_running_stats


def _forward_impl(
    x, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps, act, slope,
    name,
):  # fmt: skip
    bn = PerChannel(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    rt.kernel("bn_forward", bn.layout, dt)(
        bn.array, y_a, vector(weight, dt), vector(bias, dt), eps, rt.act_code(act), slope,
        mean_a, var_a, rt.threads(x.numel()),
    )  # fmt: skip
    if running_mean is not None or running_var is not None:
        update_running_stats(
            running_mean, running_var, num_batches_tracked, mean, var, bn.rows, momentum, name
        )
    return y, mean, var


def _stat_like(x: Tensor) -> Tensor:
    return x.new_empty(x.shape[1])


def _out_like(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=rt.per_channel_format(x))


def _forward_fake(x, weight, bias, running_mean, running_var, nbt, momentum, eps, act, slope, name):
    return _out_like(x), _stat_like(x), _stat_like(x)


# The running statistics are updated in the same op (torch's kernel does it too): the batch
# statistics are still in hand, and one call less per layer.
batch_norm_forward = define(
    "batch_norm_forward(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
    "Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, float? momentum, float eps, "
    "str act, float slope, str name) -> (Tensor, Tensor, Tensor)",
    _forward_impl,
    _forward_fake,
)


def _eval_forward_impl(x, weight, bias, running_mean, running_var, eps, act, slope):
    bn = PerChannel(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    if act == "identity":
        rt.kernel("bn_eval_forward", bn.layout, dt)(
            bn.array, y_a, vector(running_mean, dt), vector(running_var, dt),
            vector(weight, dt), vector(bias, dt), eps, rt.threads(x.numel()),
        )  # fmt: skip
    else:
        invstd = inverse_std(running_var, eps, dt)
        rt.kernel("bn_elemt", bn.layout, dt)(
            bn.array, y_a, vector(running_mean, dt), invstd, vector(weight, dt),
            vector(bias, dt), rt.act_code(act), slope, rt.threads(x.numel()),
        )  # fmt: skip
    return y


def _eval_forward_fake(x, weight, bias, running_mean, running_var, eps, act, slope):
    return _out_like(x)


batch_norm_eval_forward = define(
    "batch_norm_eval_forward(Tensor x, Tensor? weight, Tensor? bias, Tensor running_mean, "
    "Tensor running_var, float eps, str act, float slope) -> Tensor",
    _eval_forward_impl,
    _eval_forward_fake,
)


def _backward_impl(grad, x, weight, bias, mean, var, eps, act, slope, own_statistics):
    bn = PerChannel(x)
    dt = bn.dtype
    g = bn.like(grad)
    dx, dx_a = bn.empty()
    dweight, dweight_a = bn.stat()
    dbias, dbias_a = bn.stat()
    w, m, v = vector(weight, dt), vector(mean, dt), vector(var, dt)
    threads = rt.threads(x.numel())
    if act == "identity" and own_statistics:
        rt.kernel("bn_backward", bn.layout, dt)(
            g, bn.array, dx_a, w, m, v, eps, dweight_a, dbias_a, threads
        )
    elif act == "identity":
        rt.kernel("bn_eval_backward", bn.layout, dt)(
            g, bn.array, dx_a, m, v, w, eps, dweight_a, dbias_a, threads
        )
    else:
        invstd = inverse_std(var, eps, dt)
        b, code = vector(bias, dt), rt.act_code(act)
        rt.kernel("bn_backward_reduce", bn.layout, dt)(
            g, bn.array, m, invstd, w, b, code, slope, dbias_a, dweight_a, threads
        )
        sums = (dbias_a, dweight_a) if own_statistics else (vector(None, dt), vector(None, dt))
        rt.kernel("bn_backward_elemt", bn.layout, dt)(
            g, bn.array, dx_a, m, invstd, w, b, *sums, bn.rows, code, slope, threads
        )
    return dx, dweight if weight is not None else torch.empty(0, dtype=dt), dbias


def _backward_fake(grad, x, weight, bias, mean, var, eps, act, slope, own_statistics):
    channels = x.shape[1] if weight is not None else 0
    return _out_like(x), x.new_empty(channels), _stat_like(x)


batch_norm_backward = define(
    "batch_norm_backward(Tensor grad, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, "
    "Tensor var, float eps, str act, float slope, bool own_statistics) -> (Tensor, Tensor, Tensor)",
    _backward_impl,
    _backward_fake,
)


class _BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, nbt, momentum, eps, act, slope,
                name):  # fmt: skip
        y, mean, var = batch_norm_forward(
            x, weight, bias, running_mean, running_var, nbt, momentum, eps, act, slope, name
        )
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.options = (eps, act, slope)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:  # only the statistics were used: nothing flows back
            return (None,) * 11
        x, weight, bias, mean, var = ctx.saved_tensors
        eps, act, slope = ctx.options
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_backend.batch_norm_train(
                    x, weight, bias, None, None, None, None, eps, act, slope
                )

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = batch_norm_backward(
                grad, x, weight, bias, mean, var, eps, act, slope, True
            )
        return (
            dx if needs[0] else None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            *(None,) * 8,
        )


class _BatchNormEval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, act, slope):
        y = batch_norm_eval_forward(x, weight, bias, running_mean, running_var, eps, act, slope)
        ctx.save_for_backward(x, weight, bias, running_mean, running_var)
        ctx.options = (eps, act, slope)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, running_mean, running_var = ctx.saved_tensors
        eps, act, slope = ctx.options
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_backend.batch_norm_eval(
                    x, weight, bias, running_mean, running_var, eps, act, slope
                )

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = batch_norm_backward(
                grad, x, weight, bias, running_mean, running_var, eps, act, slope, False
            )
        return (
            dx if needs[0] else None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            *(None,) * 5,
        )


def batch_norm_train(
    x: Tensor,
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
    """See :func:`normkit.backends.torch_backend.batch_norm_train`."""
    args = (
        x, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps, act,
        negative_slope, name,
    )  # fmt: skip
    if needs_autograd(x, weight, bias):
        return _BatchNormTrain.apply(*args)[0]
    return batch_norm_forward(*args)[0]


def batch_norm_eval(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """See :func:`normkit.backends.torch_backend.batch_norm_eval`."""
    if needs_autograd(x, weight, bias):
        return _BatchNormEval.apply(
            x, weight, bias, running_mean, running_var, eps, act, negative_slope
        )
    return batch_norm_eval_forward(
        x, weight, bias, running_mean, running_var, eps, act, negative_slope
    )


# ---------------------------------------------------------------------------------------
# The primitives the BatchNorm variants compose (normkit.autograd.batch_norm_variants).


def _stats_impl(x):
    bn = PerChannel(x)
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    rt.kernel("bn_stats", bn.layout, bn.dtype)(bn.array, mean_a, var_a, rt.threads(x.numel()))
    return mean, var


bn_stats = define(
    "bn_stats(Tensor x) -> (Tensor, Tensor)",
    _stats_impl,
    lambda x: (_stat_like(x), _stat_like(x)),
)


def _elemt_impl(x, mean, invstd, weight, bias, act, slope):
    bn = PerChannel(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    rt.kernel("bn_elemt", bn.layout, dt)(
        bn.array, y_a, vector(mean, dt), vector(invstd, dt), vector(weight, dt),
        vector(bias, dt), rt.act_code(act), slope, rt.threads(x.numel()),
    )  # fmt: skip
    return y


bn_elemt = define(
    "bn_elemt(Tensor x, Tensor mean, Tensor invstd, Tensor? weight, Tensor? bias, str act, "
    "float slope) -> Tensor",
    _elemt_impl,
    lambda x, mean, invstd, weight, bias, act, slope: _out_like(x),
)


def _backward_reduce_impl(grad, x, mean, invstd, weight, bias, act, slope):
    bn = PerChannel(x)
    dt = bn.dtype
    sum_dy, sum_dy_a = bn.stat()
    sum_dy_xhat, sum_dy_xhat_a = bn.stat()
    rt.kernel("bn_backward_reduce", bn.layout, dt)(
        bn.like(grad), bn.array, vector(mean, dt), vector(invstd, dt), vector(weight, dt),
        vector(bias, dt), rt.act_code(act), slope, sum_dy_a, sum_dy_xhat_a, rt.threads(x.numel()),
    )  # fmt: skip
    return sum_dy, sum_dy_xhat


bn_backward_reduce = define(
    "bn_backward_reduce(Tensor grad, Tensor x, Tensor mean, Tensor invstd, Tensor? weight, "
    "Tensor? bias, str act, float slope) -> (Tensor, Tensor)",
    _backward_reduce_impl,
    lambda grad, x, mean, invstd, weight, bias, act, slope: (_stat_like(x), _stat_like(x)),
)


def _backward_elemt_impl(grad, x, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count, act,
                         slope):  # fmt: skip
    bn = PerChannel(x)
    dt = bn.dtype
    dx, dx_a = bn.empty()
    constant = sum_dy is None or sum_dy_xhat is None
    rt.kernel("bn_backward_elemt", bn.layout, dt)(
        bn.like(grad), bn.array, dx_a, vector(mean, dt), vector(invstd, dt),
        vector(weight, dt), vector(bias, dt), vector(None if constant else sum_dy, dt),
        vector(None if constant else sum_dy_xhat, dt), count, rt.act_code(act), slope,
        rt.threads(x.numel()),
    )  # fmt: skip
    return dx


bn_backward_elemt = define(
    "bn_backward_elemt(Tensor grad, Tensor x, Tensor mean, Tensor invstd, Tensor? weight, "
    "Tensor? bias, Tensor? sum_dy, Tensor? sum_dy_xhat, int count, str act, float slope) "
    "-> Tensor",
    _backward_elemt_impl,
    lambda grad, x, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count, act, slope: _out_like(
        x
    ),
)
