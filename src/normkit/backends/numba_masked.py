"""Masked normalization on the numba kernels (:mod:`normkit.kernels.masked`): the registered
ops, their autograd, and the backend functions of the op contract
(:mod:`normkit.backends.torch_masked`).

Ops (``torch.ops.normkit.*``; ``x (N, C, *)``, ``mask`` bool ``(N, *)``, ``count`` the valid
count as a 0-d float64 tensor, ``counts (N,)`` per sample; outputs are fresh tensors in
``x``'s layout, statistics in ``x``'s dtype, ``var`` biased)::

    masked_batch_norm_forward(x, mask, count, weight, bias, eps, act, slope) -> (y, mean, var)
    masked_batch_norm_eval_forward(x, mask, weight, bias, running_mean, running_var, eps,
        act, slope) -> y
    masked_batch_norm_backward(grad, x, mask, count, weight, bias, mean, var, eps, act,
        slope, batch_stats) -> (dx, dweight, dbias)       # dweight is empty without weight
    masked_bn_stats(x, mask, count) -> (mean, var)
    masked_bn_elemt(x, mask, mean, invstd, weight, bias, act, slope) -> y
    masked_bn_backward_reduce(grad, x, mask, mean, invstd, weight, bias, act, slope)
        -> (sum_dy, sum_dy_xhat)
    masked_bn_backward_elemt(grad, x, mask, mean, invstd, weight, bias, sum_dy, sum_dy_xhat,
        count, act, slope) -> dx
    masked_group_norm_forward(x, mask, counts, groups, weight, bias, eps) -> (y, mean, var)
    masked_group_norm_backward(grad, x, mask, counts, groups, weight, mean, var, eps)
        -> (dx, dweight, dbias)

Kernel layouts: a contiguous ``x`` is ``ncl`` (``(N, C, L)`` planes; ``(N, C)`` or ``L = 1``
rows are ``nlc``); ``x`` with channels fastest (channels_last, or an ``(N, L, C)`` sequence
transposed to ``(N, C, L)``) is ``nlc`` rows ``(N * L, C)``, zero-copy; anything else is
copied to contiguous first. The mask is read as bytes in place (``mask.view(uint8)``).
GroupNorm/InstanceNorm kernels take ``ncl`` (other layouts go through a contiguous copy,
as the unmasked group norm does).

One :class:`torch.autograd.Function` per mode (training, evaluation, group norm), as in
:mod:`normkit.backends.numba_batch_norm`: first-order backward through the backward op;
with ``create_graph=True`` the backward differentiates the composite torch implementation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from normkit.backends import _numba_runtime as rt
from normkit.backends import torch_masked
from normkit.backends._arrays import NUMPY_DTYPES, inverse_std, vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd
from normkit.backends.torch_masked import masked_running_stats_update

_EMPTY = {dtype: np.empty(0, np_dtype) for dtype, np_dtype in NUMPY_DTYPES.items()}


def _mask_bytes(mask: Tensor) -> np.ndarray:
    """The bool mask as a flat uint8 array (zero-copy for a contiguous mask)."""
    return mask.detach().contiguous().view(torch.uint8).reshape(-1).numpy()


class MaskedPerChannel:
    """``x (N, C, *)`` and its ``mask (N, *)`` resolved to a kernel layout."""

    __slots__ = ("array", "dtype", "layout", "mask", "x")

    def __init__(self, x: Tensor, mask: Tensor) -> None:
        x = x.detach()
        if not x.is_contiguous() and not _channels_fastest(x):
            x = x.contiguous()
        if x.is_contiguous():
            spread = x.dim() > 2 and math.prod(x.shape[2:]) > 1
            self.layout = "ncl" if spread else "nlc"
        else:
            self.layout = "nlc"
        self.x, self.dtype = x, x.dtype
        flat = _mask_bytes(mask)
        self.mask = flat.reshape(x.shape[0], -1) if self.layout == "ncl" else flat
        self.array = self.view(x)

    def view(self, t: Tensor) -> np.ndarray:
        """``t`` (x's shape and strides) as the kernel's array."""
        n, c = t.shape[0], t.shape[1]
        if self.layout == "ncl":
            return t.numpy().reshape(n, c, -1)
        if t.is_contiguous():  # (N, C) or (N, C, 1, ...)
            return t.numpy().reshape(n, c)
        return t.movedim(1, -1).numpy().reshape(-1, c)

    def like(self, t: Tensor) -> np.ndarray:
        """``t`` (x's shape, e.g. a gradient, any strides) as an array in x's layout."""
        t = t.detach()
        if t.dtype != self.dtype:
            t = t.to(self.dtype)
        if t.stride() != self.x.stride():
            t = torch.empty_like(self.x).copy_(t)
        return self.view(t)

    def empty(self) -> tuple[Tensor, np.ndarray]:
        """A fresh tensor with x's shape and strides, and its kernel array."""
        out = torch.empty_like(self.x)
        return out, self.view(out)

    def stat(self) -> tuple[Tensor, np.ndarray]:
        out = torch.empty(self.x.shape[1], dtype=self.dtype)
        return out, out.numpy()


def _channels_fastest(x: Tensor) -> bool:
    return x.dim() > 2 and x.movedim(1, -1).is_contiguous()


def _out_like(x: Tensor) -> Tensor:
    """The fake output: x's strides for a kernel layout, contiguous otherwise."""
    if x.is_contiguous() or _channels_fastest(x):
        return torch.empty_like(x)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _stat_like(x: Tensor) -> Tensor:
    return x.new_empty(x.shape[1])


# ---------------------------------------------------------------------------------------
# BatchNorm ops.


def _forward_impl(x, mask, count, weight, bias, eps, act, slope):
    bn = MaskedPerChannel(x, mask)
    dt = bn.dtype
    y, y_a = bn.empty()
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    rt.kernel("masked_bn_forward", bn.layout, dt)(
        bn.array, bn.mask, y_a, vector(weight, dt), vector(bias, dt), eps, rt.act_code(act),
        slope, float(count), mean_a, var_a, rt.threads(bn.x.numel()),
    )  # fmt: skip
    return y, mean, var


masked_batch_norm_forward = define(
    "masked_batch_norm_forward(Tensor x, Tensor mask, Tensor count, Tensor? weight, "
    "Tensor? bias, float eps, str act, float slope) -> (Tensor, Tensor, Tensor)",
    _forward_impl,
    lambda x, mask, count, weight, bias, eps, act, slope: (
        _out_like(x),
        _stat_like(x),
        _stat_like(x),
    ),
)


def _elemt(bn: MaskedPerChannel, mean, invstd: np.ndarray, weight, bias, act, slope) -> Tensor:
    dt = bn.dtype
    y, y_a = bn.empty()
    rt.kernel("masked_bn_elemt", bn.layout, dt)(
        bn.array, bn.mask, y_a, vector(mean, dt), invstd, vector(weight, dt),
        vector(bias, dt), rt.act_code(act), slope, rt.threads(bn.x.numel()),
    )  # fmt: skip
    return y


def _eval_forward_impl(x, mask, weight, bias, running_mean, running_var, eps, act, slope):
    bn = MaskedPerChannel(x, mask)
    invstd = inverse_std(running_var, eps, bn.dtype)
    return _elemt(bn, running_mean, invstd, weight, bias, act, slope)


masked_batch_norm_eval_forward = define(
    "masked_batch_norm_eval_forward(Tensor x, Tensor mask, Tensor? weight, Tensor? bias, "
    "Tensor running_mean, Tensor running_var, float eps, str act, float slope) -> Tensor",
    _eval_forward_impl,
    lambda x, mask, weight, bias, running_mean, running_var, eps, act, slope: _out_like(x),
)


def _reduce(bn: MaskedPerChannel, g, mean, invstd: np.ndarray, weight, bias, act, slope):
    dt = bn.dtype
    sum_dy, sum_dy_a = bn.stat()
    sum_dy_xhat, sum_dy_xhat_a = bn.stat()
    rt.kernel("masked_bn_backward_reduce", bn.layout, dt)(
        g, bn.array, bn.mask, vector(mean, dt), invstd, vector(weight, dt),
        vector(bias, dt), rt.act_code(act), slope, sum_dy_a, sum_dy_xhat_a,
        rt.threads(bn.x.numel()),
    )  # fmt: skip
    return sum_dy, sum_dy_xhat


def _backward_elemt(
    bn: MaskedPerChannel,
    g,
    mean,
    invstd: np.ndarray,
    weight,
    bias,
    sum_dy,
    sum_dy_xhat,
    count,
    act,
    slope,
):
    dt = bn.dtype
    dx, dx_a = bn.empty()
    rt.kernel("masked_bn_backward_elemt", bn.layout, dt)(
        g, bn.array, bn.mask, dx_a, vector(mean, dt), invstd, vector(weight, dt),
        vector(bias, dt), vector(sum_dy, dt), vector(sum_dy_xhat, dt), count,
        rt.act_code(act), slope, rt.threads(bn.x.numel()),
    )  # fmt: skip
    return dx


def _backward_impl(grad, x, mask, count, weight, bias, mean, var, eps, act, slope, batch_stats):
    bn = MaskedPerChannel(x, mask)
    dt = bn.dtype
    g = bn.like(grad)
    no_weight = torch.empty(0, dtype=dt)
    if batch_stats:
        dx, dx_a = bn.empty()
        dweight, dweight_a = bn.stat()
        dbias, dbias_a = bn.stat()
        rt.kernel("masked_bn_backward", bn.layout, dt)(
            g, bn.array, bn.mask, dx_a, vector(weight, dt), vector(bias, dt), vector(mean, dt),
            vector(var, dt), eps, rt.act_code(act), slope, float(count), dweight_a, dbias_a,
            rt.threads(bn.x.numel()),
        )  # fmt: skip
    else:  # running statistics: constants; dx = dy * w * invstd
        invstd = inverse_std(var, eps, dt)
        dbias, dweight = _reduce(bn, g, mean, invstd, weight, bias, act, slope)
        dx = _backward_elemt(bn, g, mean, invstd, weight, bias, None, None, 0.0, act, slope)
    return dx, dweight if weight is not None else no_weight, dbias


def _backward_fake(grad, x, mask, count, weight, bias, mean, var, eps, act, slope, batch_stats):
    channels = x.shape[1] if weight is not None else 0
    return _out_like(x), x.new_empty(channels), _stat_like(x)


masked_batch_norm_backward = define(
    "masked_batch_norm_backward(Tensor grad, Tensor x, Tensor mask, Tensor count, "
    "Tensor? weight, Tensor? bias, Tensor mean, Tensor var, float eps, str act, float slope, "
    "bool batch_stats) -> (Tensor, Tensor, Tensor)",
    _backward_impl,
    _backward_fake,
)


class _MaskedBatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mask, count, weight, bias, eps, act, slope):
        y, mean, var = masked_batch_norm_forward(x, mask, count, weight, bias, eps, act, slope)
        ctx.save_for_backward(x, mask, count, weight, bias, mean, var)
        ctx.options = (eps, act, slope)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:  # only the statistics were used: nothing flows back
            return (None,) * 8
        x, mask, count, weight, bias, mean, var = ctx.saved_tensors
        eps, act, slope = ctx.options
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_masked.batch_norm_train_output(
                    x, mask, count, weight, bias, eps, act, slope
                )[0]

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = masked_batch_norm_backward(
                grad, x, mask, count, weight, bias, mean, var, eps, act, slope, True
            )
        return (
            dx if needs[0] else None,
            None,
            None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
            None,
            None,
        )


class _MaskedBatchNormEval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mask, weight, bias, running_mean, running_var, eps, act, slope):
        y = masked_batch_norm_eval_forward(
            x, mask, weight, bias, running_mean, running_var, eps, act, slope
        )
        ctx.save_for_backward(x, mask, weight, bias, running_mean, running_var)
        ctx.options = (eps, act, slope)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, mask, weight, bias, running_mean, running_var = ctx.saved_tensors
        eps, act, slope = ctx.options
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_masked.masked_batch_norm_eval(
                    x, mask, weight, bias, running_mean, running_var, eps, act, slope
                )

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = masked_batch_norm_backward(
                grad, x, mask, running_mean.new_zeros(()), weight, bias, running_mean,
                running_var, eps, act, slope, False,
            )  # fmt: skip
        return (
            dx if needs[0] else None,
            None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            *(None,) * 5,
        )


def masked_batch_norm_train(
    x: Tensor,
    mask: Tensor,
    count: Tensor,
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
    """See :func:`normkit.backends.torch_masked.masked_batch_norm_train`."""
    if needs_autograd(x, weight, bias):
        y, mean, var = _MaskedBatchNormTrain.apply(
            x, mask, count, weight, bias, eps, act, negative_slope
        )
    else:
        y, mean, var = masked_batch_norm_forward(
            x, mask, count, weight, bias, eps, act, negative_slope
        )
    if running_mean is not None or running_var is not None:
        masked_running_stats_update(
            running_mean, running_var, num_batches_tracked, mean, var, count, momentum, name
        )
    return y


def masked_batch_norm_eval(
    x: Tensor,
    mask: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """See :func:`normkit.backends.torch_masked.masked_batch_norm_eval`."""
    if needs_autograd(x, weight, bias):
        return _MaskedBatchNormEval.apply(
            x, mask, weight, bias, running_mean, running_var, eps, act, negative_slope
        )
    return masked_batch_norm_eval_forward(
        x, mask, weight, bias, running_mean, running_var, eps, act, negative_slope
    )


# ---------------------------------------------------------------------------------------
# Primitives of the masked variants (batch renorm, sync BN).


def _stats_impl(x, mask, count):
    bn = MaskedPerChannel(x, mask)
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    rt.kernel("masked_bn_stats", bn.layout, bn.dtype)(
        bn.array, bn.mask, float(count), mean_a, var_a, rt.threads(bn.x.numel())
    )
    return mean, var


masked_bn_stats = define(
    "masked_bn_stats(Tensor x, Tensor mask, Tensor count) -> (Tensor, Tensor)",
    _stats_impl,
    lambda x, mask, count: (_stat_like(x), _stat_like(x)),
)

masked_bn_elemt = define(
    "masked_bn_elemt(Tensor x, Tensor mask, Tensor mean, Tensor invstd, Tensor? weight, "
    "Tensor? bias, str act, float slope) -> Tensor",
    lambda x, mask, mean, invstd, weight, bias, act, slope: _elemt(
        MaskedPerChannel(x, mask), mean, vector(invstd, x.dtype), weight, bias, act, slope
    ),
    lambda x, mask, mean, invstd, weight, bias, act, slope: _out_like(x),
)


def _backward_reduce_impl(grad, x, mask, mean, invstd, weight, bias, act, slope):
    bn = MaskedPerChannel(x, mask)
    return _reduce(bn, bn.like(grad), mean, vector(invstd, bn.dtype), weight, bias, act, slope)


masked_bn_backward_reduce = define(
    "masked_bn_backward_reduce(Tensor grad, Tensor x, Tensor mask, Tensor mean, "
    "Tensor invstd, Tensor? weight, Tensor? bias, str act, float slope) -> (Tensor, Tensor)",
    _backward_reduce_impl,
    lambda grad, x, mask, mean, invstd, weight, bias, act, slope: (_stat_like(x), _stat_like(x)),
)


def _backward_elemt_impl(grad, x, mask, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count,
                         act, slope):  # fmt: skip
    bn = MaskedPerChannel(x, mask)
    constant = sum_dy is None or sum_dy_xhat is None
    return _backward_elemt(
        bn, bn.like(grad), mean, vector(invstd, bn.dtype), weight, bias,
        None if constant else sum_dy, None if constant else sum_dy_xhat, float(count), act, slope,
    )  # fmt: skip


masked_bn_backward_elemt = define(
    "masked_bn_backward_elemt(Tensor grad, Tensor x, Tensor mask, Tensor mean, Tensor invstd, "
    "Tensor? weight, Tensor? bias, Tensor? sum_dy, Tensor? sum_dy_xhat, Tensor count, str act, "
    "float slope) -> Tensor",
    _backward_elemt_impl,
    lambda grad, x, mask, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count, act, slope: (
        _out_like(x)
    ),
)


# ---------------------------------------------------------------------------------------
# GroupNorm / InstanceNorm.


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def _group_forward_impl(x, mask, counts, groups, weight, bias, eps):
    dt = x.dtype
    n = x.shape[0]
    xc = x.detach().contiguous()
    y = torch.empty(x.shape, dtype=dt)
    mean = torch.empty((n, groups), dtype=dt)
    var = torch.empty((n, groups), dtype=dt)
    rt.kernel("masked_gn_forward", "ncl", dt)(
        _flat(xc).numpy(), _mask_bytes(mask).reshape(n, -1), _flat(y).numpy(),
        counts.detach().to(torch.float64).contiguous().numpy(), groups, vector(weight, dt),
        vector(bias, dt), eps, mean.view(-1).numpy(), var.view(-1).numpy(),
        rt.threads(x.numel()),
    )  # fmt: skip
    return y, mean, var


def _group_fake(x, mask, counts, groups, weight, bias, eps):
    stats = (x.shape[0], groups)
    return torch.empty(x.shape, dtype=x.dtype), x.new_empty(stats), x.new_empty(stats)


masked_group_norm_forward = define(
    "masked_group_norm_forward(Tensor x, Tensor mask, Tensor counts, int groups, "
    "Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)",
    _group_forward_impl,
    _group_fake,
)


def _group_backward_impl(grad, x, mask, counts, groups, weight, mean, var, eps):
    dt = x.dtype
    n, c = x.shape[0], x.shape[1]
    dx = torch.empty(x.shape, dtype=dt)
    dweight = torch.empty(c if weight is not None else 0, dtype=dt)
    dbias = torch.empty(c, dtype=dt)
    rt.kernel("masked_gn_backward", "ncl", dt)(
        _flat(grad.detach().to(dt).contiguous()).numpy(), _flat(x.detach().contiguous()).numpy(),
        _mask_bytes(mask).reshape(n, -1), _flat(dx).numpy(),
        counts.detach().to(torch.float64).contiguous().numpy(), groups, vector(weight, dt),
        vector(mean, dt), vector(var, dt), eps, dweight.numpy(), dbias.numpy(),
        rt.threads(x.numel()),
    )  # fmt: skip
    return dx, dweight, dbias


def _group_backward_fake(grad, x, mask, counts, groups, weight, mean, var, eps):
    c = x.shape[1]
    return (
        torch.empty(x.shape, dtype=x.dtype),
        x.new_empty(c if weight is not None else 0),
        x.new_empty(c),
    )


masked_group_norm_backward = define(
    "masked_group_norm_backward(Tensor grad, Tensor x, Tensor mask, Tensor counts, "
    "int groups, Tensor? weight, Tensor mean, Tensor var, float eps) "
    "-> (Tensor, Tensor, Tensor)",
    _group_backward_impl,
    _group_backward_fake,
)


class _MaskedGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mask, counts, groups, weight, bias, eps):
        y, mean, var = masked_group_norm_forward(x, mask, counts, groups, weight, bias, eps)
        ctx.save_for_backward(x, mask, counts, weight, bias, mean, var)
        ctx.options = (groups, eps)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:
            return (None,) * 7
        x, mask, counts, weight, bias, mean, var = ctx.saved_tensors
        groups, eps = ctx.options
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[4], ctx.needs_input_grad[5])
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_masked.group_norm_output(x, mask, counts, groups, weight, bias, eps)[0]

            dx, dweight, dbias = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dweight, dbias = masked_group_norm_backward(
                grad, x, mask, counts, groups, weight, mean, var, eps
            )
        return (
            dx if needs[0] else None,
            None,
            None,
            None,
            cast_grad(dweight, dtype_of(weight)) if needs[1] else None,
            cast_grad(dbias, dtype_of(bias)) if needs[2] else None,
            None,
        )


def _normalize_groups(x, mask, counts, groups, weight, bias, eps):
    if needs_autograd(x, weight, bias):
        return _MaskedGroupNorm.apply(x, mask, counts, groups, weight, bias, eps)
    return masked_group_norm_forward(x, mask, counts, groups, weight, bias, eps)


def masked_group_norm(
    x: Tensor,
    mask: Tensor,
    counts: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """See :func:`normkit.backends.torch_masked.masked_group_norm`."""
    y = _normalize_groups(x, mask, counts, num_groups, weight, bias, eps)[0]
    fmt = rt.per_channel_format(x)
    return y if fmt is torch.contiguous_format else y.contiguous(memory_format=fmt)


def masked_instance_norm_train(
    x: Tensor,
    mask: Tensor,
    counts: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    name: str = "instance_norm",
) -> Tensor:
    """See :func:`normkit.backends.torch_masked.masked_instance_norm_train`."""
    y, mean, var = _normalize_groups(x, mask, counts, x.shape[1], weight, bias, eps)
    if running_mean is not None or running_var is not None:
        masked_running_stats_update(
            running_mean, running_var, None, mean, var, counts, momentum, name
        )
    return y


OPS = {
    "masked_batch_norm_train": masked_batch_norm_train,
    "masked_batch_norm_eval": masked_batch_norm_eval,
    "masked_instance_norm_train": masked_instance_norm_train,
    "masked_group_norm": masked_group_norm,
    "masked_bn_stats": masked_bn_stats,
    "masked_bn_elemt": masked_bn_elemt,
    "masked_bn_backward_reduce": masked_bn_backward_reduce,
    "masked_bn_backward_elemt": masked_bn_backward_elemt,
}
