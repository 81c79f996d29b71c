"""The batch-free and response norms on the numba kernels: the registered ops, their
autograd, and the backend functions of the op contract (see
:mod:`normkit.backends.torch_batch_free` for what each computes).

Ops (``x (N, C, *)`` seen as ``(N, C, L)``; statistics float64, so the backward recomputes
exactly the forward's values)::

    frn_forward(x, weight?, bias?, tau?, eps, act, negative_slope) -> (y, rstd (N*C,))
    frn_backward(grad, x, weight?, bias?, tau?, rstd, act, negative_slope)
        -> (dx, dweight, dbias, dtau)
    evo_b0_forward(x, v, weight?, bias?, running_var?, eps)
        -> (y, plane_mean (N*C,), plane_var, batch_mean (C,), batch_var)
    evo_b0_backward(grad, x, v, weight?, plane_mean, plane_var, batch_mean, batch_var,
        training, eps) -> (dx, dv, dweight, dbias)
    evo_s0_forward(x, groups, v?, weight?, bias?, eps) -> (y, mean (N*G,), var)
    evo_s0_backward(grad, x, groups, v?, weight?, mean, var, eps) -> (dx, dv, dweight, dbias)
    grn_forward(x, weight?, bias?, eps, channels_last) -> (y, gx (N, C))
    grn_backward(grad, x, weight?, gx, eps, channels_last) -> (dx, dweight, dbias)
    rms_norm2d_forward(x, weight?, eps) -> (y, rstd (N, L))
    rms_norm2d_backward(grad, x, weight?, rstd) -> (dx, dweight)

``evo_b0_forward`` without ``running_var`` is training (batch statistics), with it
evaluation (``batch_var`` is then ``running_var``). Parameter gradients are ``(C,)`` (zeros
for an absent ``tau``/``v``). The FRN/EvoNorm kernels take C-contiguous data: a
channels_last input is computed on a contiguous copy and the output returned channels_last.
GlobalResponseNorm has kernels for both physical layouts; RmsNorm2d on a channels_last
input is the RMSNorm row kernel over the channels (:mod:`normkit.backends.numba_row_norm`).

One ``torch.autograd.Function`` per op calls the forward op and, in backward, the backward
op, or (with ``create_graph``) differentiates the torch formulation of the op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit._shared import per_channel_format
from normkit.backends import _numba_runtime as rt
from normkit.backends import numba_row_norm, torch_batch_free
from normkit.backends._arrays import contiguous, vector
from normkit.backends._ops import cast_grad, define, differentiable_grads, dtype_of, needs_autograd
from normkit.backends.running import running_stats_update
from normkit.backends.torch_batch_free import grn_layout

_F64 = torch.float64


def _planes(t: Tensor, dtype: torch.dtype):
    """``t (N, C, *)`` as the ``(N, C, L)`` array of a C-contiguous copy (no copy when
    ``t`` is contiguous)."""
    n, c = t.shape[0], t.shape[1]
    return contiguous(t, dtype).reshape(n, c, -1)


class _PlaneOutput:
    """A fresh output of x's shape in torch's per-channel format, with the contiguous
    ``(N, C, L)`` array the kernel writes (the output itself for contiguous inputs)."""

    __slots__ = ("array", "buffer", "format")

    def __init__(self, x: Tensor) -> None:
        self.format = per_channel_format(x)
        self.buffer = torch.empty(x.shape, dtype=x.dtype)
        self.array = self.buffer.numpy().reshape(x.shape[0], x.shape[1], -1)

    def tensor(self) -> Tensor:
        if self.format is torch.contiguous_format:
            return self.buffer
        return self.buffer.contiguous(memory_format=self.format)


def _out_like(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=per_channel_format(x))


def _stat(*shape: int) -> Tensor:
    return torch.empty(shape, dtype=_F64)


def _grads(x: Tensor, count: int) -> list[Tensor]:
    """``count`` fresh ``(C,)`` parameter-gradient tensors in x's dtype."""
    return [torch.empty(x.shape[1], dtype=x.dtype) for _ in range(count)]


def _fake_grads(x: Tensor, count: int) -> list[Tensor]:
    return [x.new_empty(x.shape[1]) for _ in range(count)]


def _param_grads(ctx, grads, params, first: int):
    """Parameter gradients cast to each parameter's dtype, ``None`` where not needed."""
    return tuple(
        cast_grad(g, dtype_of(p)) if ctx.needs_input_grad[first + i] else None
        for i, (g, p) in enumerate(zip(grads, params, strict=True))
    )


# ---------------------------------------------------------------------------------------
# FilterResponseNorm.


def _frn_forward_impl(x, weight, bias, tau, eps, act, negative_slope):
    dt = x.dtype
    out = _PlaneOutput(x)
    rstd = _stat(x.shape[0] * x.shape[1])
    rt.kernel("frn_forward", "ncl", dt)(
        _planes(x, dt), out.array, vector(weight, dt), vector(bias, dt), vector(tau, dt), eps,
        rt.act_code(act), negative_slope, rstd.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return out.tensor(), rstd


def _frn_forward_fake(x, weight, bias, tau, eps, act, negative_slope):
    return _out_like(x), x.new_empty(x.shape[0] * x.shape[1], dtype=_F64)


frn_forward = define(
    "frn_forward(Tensor x, Tensor? weight, Tensor? bias, Tensor? tau, float eps, str act, "
    "float negative_slope) -> (Tensor, Tensor)",
    _frn_forward_impl,
    _frn_forward_fake,
)


def _frn_backward_impl(grad, x, weight, bias, tau, rstd, act, negative_slope):
    dt = x.dtype
    dx = _PlaneOutput(x)
    dw, db, dtau = _grads(x, 3)
    rt.kernel("frn_backward", "ncl", dt)(
        _planes(grad, dt), _planes(x, dt), dx.array, vector(weight, dt), vector(bias, dt),
        vector(tau, dt), rstd.numpy(), rt.act_code(act), negative_slope, dw.numpy(),
        db.numpy(), dtau.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return dx.tensor(), dw, db, dtau


def _frn_backward_fake(grad, x, weight, bias, tau, rstd, act, negative_slope):
    return (_out_like(x), *_fake_grads(x, 3))


frn_backward = define(
    "frn_backward(Tensor grad, Tensor x, Tensor? weight, Tensor? bias, Tensor? tau, "
    "Tensor rstd, str act, float negative_slope) -> (Tensor, Tensor, Tensor, Tensor)",
    _frn_backward_impl,
    _frn_backward_fake,
)


class _FilterResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, tau, eps, act, negative_slope):
        y, rstd = frn_forward(x, weight, bias, tau, eps, act, negative_slope)
        ctx.save_for_backward(x, weight, bias, tau, rstd)
        ctx.options = (eps, act, negative_slope)
        ctx.mark_non_differentiable(rstd)
        ctx.set_materialize_grads(False)
        return y, rstd

    @staticmethod
    def backward(ctx, grad, _grad_rstd):
        if grad is None:
            return (None,) * 7
        x, weight, bias, tau, rstd = ctx.saved_tensors
        eps, act, slope = ctx.options
        needs = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():

            def forward(x, weight, bias, tau):
                return torch_batch_free.filter_response_norm(x, weight, bias, tau, eps, act, slope)

            dx, dw, db, dtau = differentiable_grads(forward, (x, weight, bias, tau), grad, needs)
        else:
            dx, dw, db, dtau = frn_backward(grad, x, weight, bias, tau, rstd, act, slope)
        params = _param_grads(ctx, (dw, db, dtau), (weight, bias, tau), 1)
        return (dx if needs[0] else None, *params, None, None, None)


def filter_response_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    tau: Tensor | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_free.filter_response_norm`."""
    if needs_autograd(x, weight, bias, tau):
        return _FilterResponseNorm.apply(x, weight, bias, tau, eps, act, negative_slope)[0]
    return frn_forward(x, weight, bias, tau, eps, act, negative_slope)[0]


# ---------------------------------------------------------------------------------------
# EvoNorm-B0.


def _evo_b0_forward_impl(x, v, weight, bias, running_var, eps):
    dt = x.dtype
    n, c = x.shape[0], x.shape[1]
    out = _PlaneOutput(x)
    plane_mean, plane_var = _stat(n * c), _stat(n * c)
    batch_mean, batch_var = _stat(c), _stat(c)
    rt.kernel("evo_b0_forward", "ncl", dt)(
        _planes(x, dt), out.array, vector(v, dt), vector(weight, dt), vector(bias, dt),
        vector(running_var, _F64), running_var is None, eps, plane_mean.numpy(),
        plane_var.numpy(), batch_mean.numpy(), batch_var.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return out.tensor(), plane_mean, plane_var, batch_mean, batch_var


def _evo_b0_forward_fake(x, v, weight, bias, running_var, eps):
    n, c = x.shape[0], x.shape[1]
    stats = [x.new_empty(size, dtype=_F64) for size in (n * c, n * c, c, c)]
    return (_out_like(x), *stats)


evo_b0_forward = define(
    "evo_b0_forward(Tensor x, Tensor v, Tensor? weight, Tensor? bias, Tensor? running_var, "
    "float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _evo_b0_forward_impl,
    _evo_b0_forward_fake,
)


def _evo_b0_backward_impl(
    grad, x, v, weight, plane_mean, plane_var, batch_mean, batch_var, training, eps
):
    dt = x.dtype
    dx = _PlaneOutput(x)
    dv, dw, db = _grads(x, 3)
    rt.kernel("evo_b0_backward", "ncl", dt)(
        _planes(grad, dt), _planes(x, dt), dx.array, vector(v, dt), vector(weight, dt),
        plane_mean.numpy(), plane_var.numpy(), batch_mean.numpy(), batch_var.numpy(), training,
        eps, dv.numpy(), dw.numpy(), db.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return dx.tensor(), dv, dw, db


def _evo_b0_backward_fake(
    grad, x, v, weight, plane_mean, plane_var, batch_mean, batch_var, training, eps
):
    return (_out_like(x), *_fake_grads(x, 3))


evo_b0_backward = define(
    "evo_b0_backward(Tensor grad, Tensor x, Tensor v, Tensor? weight, Tensor plane_mean, "
    "Tensor plane_var, Tensor batch_mean, Tensor batch_var, bool training, float eps) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    _evo_b0_backward_impl,
    _evo_b0_backward_fake,
)


class _EvoNormB0(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v, weight, bias, running_var, eps):
        y, plane_mean, plane_var, batch_mean, batch_var = evo_b0_forward(
            x, v, weight, bias, running_var, eps
        )
        ctx.save_for_backward(
            x, v, weight, bias, running_var, plane_mean, plane_var, batch_mean, batch_var
        )
        ctx.eps = eps
        ctx.mark_non_differentiable(plane_mean, plane_var, batch_mean, batch_var)
        ctx.set_materialize_grads(False)
        return y, plane_mean, plane_var, batch_mean, batch_var

    @staticmethod
    def backward(ctx, grad, *_grad_stats):
        if grad is None:
            return (None,) * 6
        x, v, weight, bias, running_var, plane_mean, plane_var, batch_mean, batch_var = (
            ctx.saved_tensors
        )
        eps = ctx.eps
        training = running_var is None
        needs = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():

            def forward(x, v, weight, bias):
                var = torch_batch_free.batch_variance(x) if training else running_var
                return torch_batch_free.evo_norm_b0_apply(x, var, v, weight, bias, eps)

            dx, dv, dw, db = differentiable_grads(forward, (x, v, weight, bias), grad, needs)
        else:
            dx, dv, dw, db = evo_b0_backward(
                grad, x, v, weight, plane_mean, plane_var, batch_mean, batch_var, training, eps
            )
        params = _param_grads(ctx, (dv, dw, db), (v, weight, bias), 1)
        return (dx if needs[0] else None, *params, None, None)


def _evo_b0(x, v, weight, bias, running_var, eps):
    if needs_autograd(x, v, weight, bias):
        return _EvoNormB0.apply(x, v, weight, bias, running_var, eps)
    return evo_b0_forward(x, v, weight, bias, running_var, eps)


def evo_norm_b0_train(
    x: Tensor,
    v: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    name: str = "evo_norm_b0",
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_free.evo_norm_b0_train`."""
    y, _, _, _, batch_var = _evo_b0(x, v, weight, bias, None, eps)
    if running_var is not None:
        stat = batch_var.to(running_var.dtype)
        # timm's rule is BatchNorm's for the variance alone (no running mean, no batch
        # count): the variance also fills the mean slot, where the op only checks it.
        count = x.numel() // x.shape[1]
        running_stats_update(None, running_var, None, stat, stat, count, momentum, name)
    return y


def evo_norm_b0_eval(
    x: Tensor,
    v: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_var: Tensor,
    eps: float,
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_free.evo_norm_b0_eval`."""
    return _evo_b0(x, v, weight, bias, running_var, eps)[0]


# ---------------------------------------------------------------------------------------
# EvoNorm-S0 / S0a.


def _evo_s0_forward_impl(x, groups, v, weight, bias, eps):
    dt = x.dtype
    out = _PlaneOutput(x)
    mean, var = _stat(x.shape[0] * groups), _stat(x.shape[0] * groups)
    rt.kernel("evo_s0_forward", "ncl", dt)(
        _planes(x, dt), out.array, groups, vector(v, dt), vector(weight, dt), vector(bias, dt),
        eps, mean.numpy(), var.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return out.tensor(), mean, var


def _evo_s0_forward_fake(x, groups, v, weight, bias, eps):
    stats = x.shape[0] * groups
    return _out_like(x), x.new_empty(stats, dtype=_F64), x.new_empty(stats, dtype=_F64)


evo_s0_forward = define(
    "evo_s0_forward(Tensor x, int groups, Tensor? v, Tensor? weight, Tensor? bias, float eps) "
    "-> (Tensor, Tensor, Tensor)",
    _evo_s0_forward_impl,
    _evo_s0_forward_fake,
)


def _evo_s0_backward_impl(grad, x, groups, v, weight, mean, var, eps):
    dt = x.dtype
    dx = _PlaneOutput(x)
    dv, dw, db = _grads(x, 3)
    rt.kernel("evo_s0_backward", "ncl", dt)(
        _planes(grad, dt), _planes(x, dt), dx.array, groups, vector(v, dt), vector(weight, dt),
        mean.numpy(), var.numpy(), eps, dv.numpy(), dw.numpy(), db.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return dx.tensor(), dv, dw, db


def _evo_s0_backward_fake(grad, x, groups, v, weight, mean, var, eps):
    return (_out_like(x), *_fake_grads(x, 3))


evo_s0_backward = define(
    "evo_s0_backward(Tensor grad, Tensor x, int groups, Tensor? v, Tensor? weight, "
    "Tensor mean, Tensor var, float eps) -> (Tensor, Tensor, Tensor, Tensor)",
    _evo_s0_backward_impl,
    _evo_s0_backward_fake,
)


class _EvoNormS0(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, groups, v, weight, bias, eps):
        y, mean, var = evo_s0_forward(x, groups, v, weight, bias, eps)
        ctx.save_for_backward(x, v, weight, bias, mean, var)
        ctx.options = (groups, eps)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        if grad is None:
            return (None,) * 6
        x, v, weight, bias, mean, var = ctx.saved_tensors
        groups, eps = ctx.options
        needs = (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:5])
        if torch.is_grad_enabled():

            def forward(x, v, weight, bias):
                return torch_batch_free.evo_norm_s0(x, groups, v, weight, bias, eps)

            dx, dv, dw, db = differentiable_grads(forward, (x, v, weight, bias), grad, needs)
        else:
            dx, dv, dw, db = evo_s0_backward(grad, x, groups, v, weight, mean, var, eps)
        params = _param_grads(ctx, (dv, dw, db), (v, weight, bias), 2)
        return (dx if needs[0] else None, None, *params, None)


def evo_norm_s0(
    x: Tensor,
    groups: int,
    v: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_free.evo_norm_s0`."""
    if needs_autograd(x, v, weight, bias):
        return _EvoNormS0.apply(x, groups, v, weight, bias, eps)[0]
    return evo_s0_forward(x, groups, v, weight, bias, eps)[0]


# ---------------------------------------------------------------------------------------
# GlobalResponseNorm.


def _grn_kernel_layout(x: Tensor, channels_last: bool) -> str:
    """``"ncl"`` (x seen channels-first is C-contiguous) or ``"rows"`` (channels fastest);
    any other x is copied into its own orientation's contiguous layout."""
    layout = grn_layout(x, channels_last)
    if layout == "copy":
        return "rows" if channels_last else "ncl"
    return "ncl" if layout == "ncl" else "rows"


def _grn_arrange(t: Tensor, layout: str, channels_last: bool) -> Tensor:
    """``t`` (x's orientation) as ``(N, C, *)`` for ``"ncl"``, ``(N, *, C)`` for ``"rows"``."""
    if layout == "ncl":
        return t.movedim(-1, 1) if channels_last else t
    return t if channels_last else t.movedim(1, -1)


def _grn_restore(t: Tensor, layout: str, channels_last: bool) -> Tensor:
    """The inverse of :func:`_grn_arrange`."""
    if layout == "ncl":
        return t.movedim(1, -1) if channels_last else t
    return t if channels_last else t.movedim(-1, 1)


def _grn_array(t: Tensor, layout: str, dtype: torch.dtype):
    """An arranged tensor as the kernel's C-contiguous array (a copy only when needed)."""
    a = contiguous(t, dtype)
    return a.reshape(t.shape[0], t.shape[1], -1) if layout == "ncl" else a.reshape(-1, t.shape[-1])


def _grn_channels(x: Tensor, channels_last: bool) -> int:
    return x.shape[-1] if channels_last else x.shape[1]


def _grn_forward_impl(x, weight, bias, eps, channels_last):
    dt = x.dtype
    n, c = x.shape[0], _grn_channels(x, channels_last)
    layout = _grn_kernel_layout(x, channels_last)
    arranged = _grn_arrange(x.detach(), layout, channels_last)
    buffer = torch.empty(arranged.shape, dtype=dt)
    gx = _stat(n, c)
    args = (_grn_array(arranged, layout, dt), _grn_array(buffer, layout, dt))
    name = "grn_forward"
    if layout == "rows":
        args, name = (*args, n), "grn_forward_rows"
    rt.kernel(name, layout, dt)(
        *args, vector(weight, dt), vector(bias, dt), eps, gx.numpy(), rt.threads(x.numel())
    )
    return _grn_like(_grn_restore(buffer, layout, channels_last), x, channels_last), gx


def _grn_like(out: Tensor, x: Tensor, channels_last: bool) -> Tensor:
    """``out`` laid out as ``torch.empty_like(x)`` (a copy only when x had to be copied
    for the kernel and is dense in another order)."""
    if grn_layout(x, channels_last) != "copy":
        return out
    like = torch.empty_like(x)
    return out if out.stride() == like.stride() else like.copy_(out)


def _grn_forward_fake(x, weight, bias, eps, channels_last):
    c = _grn_channels(x, channels_last)
    return torch.empty_like(x), x.new_empty((x.shape[0], c), dtype=_F64)


grn_forward = define(
    "grn_forward(Tensor x, Tensor? weight, Tensor? bias, float eps, bool channels_last) "
    "-> (Tensor, Tensor)",
    _grn_forward_impl,
    _grn_forward_fake,
)


def _grn_backward_impl(grad, x, weight, gx, eps, channels_last):
    dt = x.dtype
    n, c = x.shape[0], _grn_channels(x, channels_last)
    layout = _grn_kernel_layout(x, channels_last)
    arranged = _grn_arrange(x.detach(), layout, channels_last)
    buffer = torch.empty(arranged.shape, dtype=dt)
    dw = torch.empty(c, dtype=dt)
    db = torch.empty(c, dtype=dt)
    args = (
        _grn_array(_grn_arrange(grad.detach(), layout, channels_last), layout, dt),
        _grn_array(arranged, layout, dt),
        _grn_array(buffer, layout, dt),
    )
    name = "grn_backward"
    if layout == "rows":
        args, name = (*args, n), "grn_backward_rows"
    rt.kernel(name, layout, dt)(
        *args, vector(weight, dt), eps, gx.numpy(), dw.numpy(), db.numpy(), rt.threads(x.numel())
    )
    return _grn_like(_grn_restore(buffer, layout, channels_last), x, channels_last), dw, db


def _grn_backward_fake(grad, x, weight, gx, eps, channels_last):
    c = _grn_channels(x, channels_last)
    return torch.empty_like(x), x.new_empty(c), x.new_empty(c)


grn_backward = define(
    "grn_backward(Tensor grad, Tensor x, Tensor? weight, Tensor gx, float eps, "
    "bool channels_last) -> (Tensor, Tensor, Tensor)",
    _grn_backward_impl,
    _grn_backward_fake,
)


class _GlobalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, channels_last):
        y, gx = grn_forward(x, weight, bias, eps, channels_last)
        ctx.save_for_backward(x, weight, bias, gx)
        ctx.options = (eps, channels_last)
        ctx.mark_non_differentiable(gx)
        ctx.set_materialize_grads(False)
        return y, gx

    @staticmethod
    def backward(ctx, grad, _grad_gx):
        if grad is None:
            return (None,) * 5
        x, weight, bias, gx = ctx.saved_tensors
        eps, channels_last = ctx.options
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():

            def forward(x, weight, bias):
                return torch_batch_free.global_response_norm(x, weight, bias, eps, channels_last)

            dx, dw, db = differentiable_grads(forward, (x, weight, bias), grad, needs)
        else:
            dx, dw, db = grn_backward(grad, x, weight, gx, eps, channels_last)
        params = _param_grads(ctx, (dw, db), (weight, bias), 1)
        return (dx if needs[0] else None, *params, None, None)


def global_response_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, channels_last: bool
) -> Tensor:
    """See :func:`normkit.backends.torch_batch_free.global_response_norm`."""
    if needs_autograd(x, weight, bias):
        return _GlobalResponseNorm.apply(x, weight, bias, eps, channels_last)[0]
    return grn_forward(x, weight, bias, eps, channels_last)[0]


# ---------------------------------------------------------------------------------------
# RmsNorm2d.


def _rms2d_forward_impl(x, weight, eps):
    dt = x.dtype
    out = _PlaneOutput(x)
    rstd = _stat(x.shape[0], x.numel() // (x.shape[0] * x.shape[1]))
    rt.kernel("rms2d_forward", "ncl", dt)(
        _planes(x, dt), out.array, vector(weight, dt), eps, rstd.numpy(), rt.threads(x.numel())
    )
    return out.tensor(), rstd


def _rms2d_forward_fake(x, weight, eps):
    positions = x.numel() // (x.shape[0] * x.shape[1])
    return _out_like(x), x.new_empty((x.shape[0], positions), dtype=_F64)


rms_norm2d_forward = define(
    "rms_norm2d_forward(Tensor x, Tensor? weight, float eps) -> (Tensor, Tensor)",
    _rms2d_forward_impl,
    _rms2d_forward_fake,
)


def _rms2d_backward_impl(grad, x, weight, rstd):
    dt = x.dtype
    dx = _PlaneOutput(x)
    dw = torch.empty(x.shape[1], dtype=dt)
    rt.kernel("rms2d_backward", "ncl", dt)(
        _planes(grad, dt), _planes(x, dt), dx.array, vector(weight, dt), rstd.numpy(),
        dw.numpy(), rt.threads(x.numel()),
    )  # fmt: skip
    return dx.tensor(), dw


def _rms2d_backward_fake(grad, x, weight, rstd):
    return _out_like(x), x.new_empty(x.shape[1])


rms_norm2d_backward = define(
    "rms_norm2d_backward(Tensor grad, Tensor x, Tensor? weight, Tensor rstd) -> (Tensor, Tensor)",
    _rms2d_backward_impl,
    _rms2d_backward_fake,
)


class _RmsNorm2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = rms_norm2d_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(rstd)
        ctx.set_materialize_grads(False)
        return y, rstd

    @staticmethod
    def backward(ctx, grad, _grad_rstd):
        if grad is None:
            return None, None, None
        x, weight, rstd = ctx.saved_tensors
        eps = ctx.eps
        needs = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():

            def forward(x, weight):
                return torch_batch_free.rms_norm2d(x, weight, eps)

            dx, dw = differentiable_grads(forward, (x, weight), grad, needs)
        else:
            dx, dw = rms_norm2d_backward(grad, x, weight, rstd)
        return dx if needs[0] else None, *_param_grads(ctx, (dw,), (weight,), 1), None


def rms_norm2d(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """See :func:`normkit.backends.torch_batch_free.rms_norm2d`."""
    if per_channel_format(x) is not torch.contiguous_format:
        # channels fastest: RMSNorm over the last dim of the (N, *, C) view, no copy
        rows = numba_row_norm.rms_norm(x.movedim(1, -1), (x.shape[1],), weight, eps)
        return rows.movedim(-1, 1)
    if needs_autograd(x, weight):
        return _RmsNorm2d.apply(x, weight, eps)[0]
    return rms_norm2d_forward(x, weight, eps)[0]


OPS = {
    "filter_response_norm": filter_response_norm,
    "evo_norm_b0_train": evo_norm_b0_train,
    "evo_norm_b0_eval": evo_norm_b0_eval,
    "evo_norm_s0": evo_norm_s0,
    "global_response_norm": global_response_norm,
    "rms_norm2d": rms_norm2d,
}
