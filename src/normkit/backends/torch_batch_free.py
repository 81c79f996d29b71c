"""The batch-free and response norms as composite torch operations: the ``"torch"`` backend's
implementation of these ops (every device and dtype) and the differentiable formulas the
numba backend's double backward goes through.

Every function here is the **contract** of the op of the same name, which
:mod:`normkit.backends.numba_batch_free` implements with the same signature and semantics.
Statistics are computed in the accumulation dtype of the input (float64 for float64, float32
for everything else: unlike timm, a float64 input is never reduced in float32); the result
is a fresh tensor of ``x``'s shape in torch's per-channel memory format (channels_last for a
channels_last input, contiguous otherwise), differentiable to any order. ``x`` is
``(N, C, *)`` unless said otherwise; ``weight``/``bias``/``v``/``tau`` are ``(C,)`` or
``None`` (weight 1, bias 0; GlobalResponseNorm's absent weight is 0); ``L`` is the number
of spatial positions. Formulas: :mod:`normkit.reference_batch_free`.

* ``filter_response_norm(x, weight, bias, tau, eps, act, negative_slope)``:
  ``z = x / sqrt(mean_plane(x**2) + eps) * w + b``; ``max(z, tau)`` when ``tau`` is given,
  else ``act(z)``.
* ``evo_norm_b0_train(x, v, weight, bias, running_var, momentum, eps, name)``:
  ``x / max(sqrt(var_b + eps), v * x + sqrt(var_plane + eps)) * w + b`` with ``var_b`` the
  batch variance per channel (differentiated through); ``running_var`` (if given) moves by
  ``normkit::running_stats_update`` (unbiased ``var_b``, factor ``momentum``, NaN guard).
* ``evo_norm_b0_eval(x, v, weight, bias, running_var, eps)``: the same with ``running_var``
  in place of ``var_b`` (a constant).
* ``evo_norm_s0(x, groups, v, weight, bias, eps)``:
  ``x * sigmoid(v * x) / sqrt(var_group + eps) * w + b`` (``v`` None: no gate).
* ``global_response_norm(x, weight, bias, eps, channels_last)``: ``x`` is ``(N, C, *)``, or
  ``(N, *, C)`` with ``channels_last``; ``y = x + (w * (x * nx) + b)``,
  ``nx = gx / (mean_c(gx) + eps)``, ``gx`` the L2 norm of each channel over the positions.
  The output is laid out as ``torch.empty_like(x)`` (as torch's elementwise ops lay out
  theirs), not in the per-channel format.
* ``rms_norm2d(x, weight, eps)``: ``x / sqrt(mean_c(x**2) + eps) * w`` at each position.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normkit._shared import accumulation_dtype, per_channel_format
from normkit.backends.running import running_stats_update
from normkit.backends.torch_ops import activation


def _spatial(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def _channel(v: Tensor | None, x: Tensor, fill: float) -> Tensor | float:
    """``v (C,)`` in ``x``'s dtype, shaped to broadcast over ``x (N, C, *)``, or ``fill``."""
    if v is None:
        return fill
    return v.to(x.dtype).reshape(-1, *(1,) * (x.dim() - 2))


def _accumulate(x: Tensor) -> Tensor:
    return x.to(accumulation_dtype(x.dtype))


def _finish(y: Tensor, x: Tensor) -> Tensor:
    """``y`` in x's dtype and torch's per-channel memory format for ``x``."""
    return y.to(x.dtype).contiguous(memory_format=per_channel_format(x))


def filter_response_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    tau: Tensor | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    xa = _accumulate(x)
    nu2 = xa.square().mean(dim=_spatial(x), keepdim=True)
    z = xa * torch.rsqrt(nu2 + eps) * _channel(weight, xa, 1.0) + _channel(bias, xa, 0.0)
    y = (
        torch.maximum(z, _channel(tau, xa, 0.0))
        if tau is not None
        else activation(z, act, negative_slope)
    )
    return _finish(y, x)


def _variance(x: Tensor, dims: tuple[int, ...], keepdim: bool) -> Tensor:
    """The biased variance over ``dims`` (two passes; NaN for an empty reduction, silently,
    as torch's normalization kernels give)."""
    centered = x - x.mean(dim=dims, keepdim=True)
    return centered.square().mean(dim=dims, keepdim=keepdim)


def batch_variance(x: Tensor) -> Tensor:
    """The biased variance of each channel of ``x (N, C, *)`` over all other dims, ``(C,)``,
    in the accumulation dtype (differentiable)."""
    return _variance(_accumulate(x), (0, *_spatial(x)), False)


def evo_norm_b0_apply(
    x: Tensor,
    var: Tensor,
    v: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """``x / max(sqrt(var + eps), v * x + sqrt(var_plane + eps)) * w + b`` for a given
    per-channel ``var (C,)`` (the batch variance, or the running one)."""
    xa = _accumulate(x)
    left = torch.sqrt(_channel(var, xa, 0.0) + eps)
    s_i = torch.sqrt(_variance(xa, _spatial(x), True) + eps)
    right = xa * _channel(v, xa, 0.0) + s_i
    y = xa / torch.maximum(left, right) * _channel(weight, xa, 1.0) + _channel(bias, xa, 0.0)
    return _finish(y, x)


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
    var = batch_variance(x)
    if running_var is not None:
        stat = var.detach()
        # timm's rule is BatchNorm's for the variance alone (no running mean, no batch
        # count): the variance also fills the mean slot, where the op only checks it.
        count = x.numel() // x.shape[1]
        running_stats_update(None, running_var, None, stat, stat, count, momentum, name)
    return evo_norm_b0_apply(x, var, v, weight, bias, eps)


def evo_norm_b0_eval(
    x: Tensor,
    v: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_var: Tensor,
    eps: float,
) -> Tensor:
    return evo_norm_b0_apply(x, running_var, v, weight, bias, eps)


def evo_norm_s0(
    x: Tensor,
    groups: int,
    v: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    xa = _accumulate(x)
    grouped = xa.reshape(x.shape[0], groups, math.prod(x.shape[1:]) // groups)
    s_g = torch.sqrt(_variance(grouped, (2,), True) + eps)
    gated = xa * torch.sigmoid(xa * _channel(v, xa, 0.0)) if v is not None else xa
    y = (gated.reshape(grouped.shape) / s_g).reshape(x.shape)
    return _finish(y * _channel(weight, xa, 1.0) + _channel(bias, xa, 0.0), x)


def grn_layout(x: Tensor, channels_last: bool) -> str:
    """How GlobalResponseNorm's input lies in memory, seen channels-first ``(N, C, *)``:
    ``"ncl"`` (C-contiguous), ``"nlc"`` (channels fastest: the ``(N, *, C)`` view is
    contiguous) or ``"copy"`` (neither). The output is laid out as ``torch.empty_like(x)``
    (as torch's elementwise ops lay out theirs)."""
    xc = x.movedim(-1, 1) if channels_last else x
    if xc.is_contiguous():
        return "ncl"
    if xc.movedim(1, -1).is_contiguous():
        return "nlc"
    return "copy"


def global_response_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, channels_last: bool
) -> Tensor:
    xc = _accumulate(x.movedim(-1, 1) if channels_last else x)
    gx = torch.linalg.vector_norm(xc, 2, dim=_spatial(xc), keepdim=True)
    nx = gx / (gx.mean(dim=1, keepdim=True) + eps)
    y = (xc + (_channel(weight, xc, 0.0) * (xc * nx) + _channel(bias, xc, 0.0))).to(x.dtype)
    layout = grn_layout(x, channels_last)
    if layout == "ncl":
        y = y.contiguous()
    elif layout == "nlc":
        y = y.movedim(1, -1).contiguous().movedim(-1, 1)
    y = y.movedim(1, -1) if channels_last else y
    if layout == "copy":
        like = torch.empty_like(x)
        return y if y.stride() == like.stride() else like.copy_(y)
    return y


def rms_norm2d(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    xa = _accumulate(x)
    y = xa * torch.rsqrt(xa.square().mean(dim=1, keepdim=True) + eps)
    return _finish(y * _channel(weight, xa, 1.0), x)


OPS = {
    "filter_response_norm": filter_response_norm,
    "evo_norm_b0_train": evo_norm_b0_train,
    "evo_norm_b0_eval": evo_norm_b0_eval,
    "evo_norm_s0": evo_norm_s0,
    "global_response_norm": global_response_norm,
    "rms_norm2d": rms_norm2d,
}
