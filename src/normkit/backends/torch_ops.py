"""BatchNorm's four primitives as composite torch operations: the fallback of the BatchNorm
variants (renorm, ghost batches, sync BN) and the differentiable reference their double
backward recomputes through.

``x`` is ``(N, C, *)`` (any strides); statistics are per channel over all other dims, in the
accumulation dtype (float64 for float64 inputs, float32 otherwise), ``var`` biased::

    batch_norm_stats            x -> mean, var                                (one read)
    batch_norm_elemt            y = act((x - mean) * invstd * weight + bias)   (read, write)
    batch_norm_backward_reduce  sum(dy), sum(dy * x_hat)                      (two reads)
    batch_norm_backward_elemt   dx = weight * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)

where ``dy = grad * act'(pre)`` is the gradient before the activation (``act`` one of
:data:`normkit._shared.ACTIVATIONS`; ``negative_slope`` is leaky_relu's). Sync BN is an
all-reduce between them, batch renorm folds ``r, d`` into ``weight``/``bias``, fused
activations pass ``act``. The numba backend registers ops of the same names and signatures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from normkit._shared import ACTIVATIONS, accumulation_dtype, per_channel_format


def _moments(x: Tensor, dims: tuple[int, ...], center: bool) -> tuple[Tensor, Tensor]:
    """mean and biased variance over ``dims`` (keepdim); ``center=False``: mean 0, mean square."""
    if x.numel() == 0:  # empty groups: NaN statistics, as torch's own kernels give
        nan = x.sum(dim=dims, keepdim=True) / 0.0
        return nan, nan.clone()
    if center:
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        return mean, var
    return torch.zeros((), dtype=x.dtype, device=x.device), x.square().mean(dim=dims, keepdim=True)


def _apply_affine(
    x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, affine_shape: tuple[int, ...]
) -> Tensor:
    acc = x_hat.dtype
    if weight is not None:
        x_hat = x_hat * weight.to(acc).reshape(affine_shape)
    if bias is not None:
        x_hat = x_hat + bias.to(acc).reshape(affine_shape)
    return x_hat


def _dims(x: Tensor) -> tuple[int, ...]:
    """The reduction dims of a per-channel statistic of ``x (N, C, *)``: all but dim 1."""
    return (0, *range(2, x.dim()))


def _channel(v: Tensor | None, acc: torch.dtype, x: Tensor) -> Tensor | None:
    """A ``(C,)`` vector shaped to broadcast against ``x (N, C, *)``."""
    return None if v is None else v.to(acc).reshape(-1, *(1,) * (x.dim() - 2))


def activation(
    pre: Tensor, act: str, negative_slope: float = 0.01, inplace: bool = False
) -> Tensor:
    """``act(pre)`` for the fused activations (gelu is the exact, erf-based one); with
    ``inplace``, written over ``pre`` where torch has an in-place form (not gelu)."""
    if act == "identity":
        return pre
    if act == "relu":
        return torch.relu_(pre) if inplace else torch.relu(pre)
    if act == "leaky_relu":
        return F.leaky_relu(pre, negative_slope, inplace=inplace)
    if act == "silu":
        return F.silu(pre, inplace=inplace)
    if act == "gelu":
        return F.gelu(pre)
    if act == "relu6":
        return F.relu6(pre, inplace=inplace)
    if act == "hardswish":
        return F.hardswish(pre, inplace=inplace)
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def activation_on_output(
    y: Tensor, act: str, negative_slope: float = 0.01, view: bool = False
) -> Tensor:
    """``act(y)`` on a normalization's own fresh output ``y``, which nobody else holds: in
    place where that is free, as the ``ReLU(inplace=True)`` after torch's layer in the
    models is (out of place, the activation would allocate and page-fault a second tensor
    of ``y``'s size). Always in place when autograd records nothing; while it records, relu
    only, and only when ``y`` is not a ``view`` (relu's backward reads the result; the other
    activations' backward read their input, which in place would be overwritten; in place
    on a view autograd would rebase the view's base, the copy this avoids)."""
    if act == "identity":
        return y
    recording = y.requires_grad and torch.is_grad_enabled()
    inplace = not recording or (act == "relu" and not view)
    return activation(y, act, negative_slope, inplace=inplace)


def activation_grad(grad: Tensor, pre: Tensor, act: str, negative_slope: float = 0.01) -> Tensor:
    """``grad * act'(pre)``: the gradient before the activation."""
    if act == "identity":
        return grad
    if act == "relu":
        return torch.where(pre > 0, grad, 0.0)
    if act == "leaky_relu":
        return torch.where(pre > 0, grad, grad * negative_slope)
    if act == "silu":
        sig = torch.sigmoid(pre)
        return grad * sig * (1 + pre * (1 - sig))
    if act == "gelu":
        cdf = 0.5 * (1 + torch.erf(pre * 0.7071067811865476))
        pdf = torch.exp(-0.5 * pre * pre) * 0.3989422804014327
        return grad * (cdf + pre * pdf)
    if act == "relu6":
        return torch.where((pre <= 0) | (pre >= 6), 0.0, grad)
    if act == "hardswish":
        return torch.where(pre < -3, 0.0, torch.where(pre <= 3, grad * (pre / 3 + 0.5), grad))
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def batch_norm_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean (C,), var (C,))`` of ``x (N, C, *)``; biased variance."""
    mean, var = _moments(x.to(accumulation_dtype(x.dtype)), _dims(x), True)
    return mean.reshape(-1), var.reshape(-1)


def _pre_activation(x, mean, invstd, weight, bias, acc):
    x_hat = (x.to(acc) - _channel(mean, acc, x)) * _channel(invstd, acc, x)
    shape = (-1, *(1,) * (x.dim() - 2))
    return x_hat, _apply_affine(x_hat, weight, bias, shape)


def batch_norm_elemt(
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """``y = act((x - mean) * invstd * weight + bias)`` per channel; same shape/layout as ``x``."""
    acc = accumulation_dtype(x.dtype)
    _, pre = _pre_activation(x, mean, invstd, weight, bias, acc)
    return _per_channel_output(activation(pre, act, negative_slope).to(x.dtype), x)


def batch_norm_backward_reduce(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """``(sum(dy), sum(dy * x_hat))`` per channel, ``dy = grad * act'(pre)``.

    These are ``dbias`` and ``dweight``; ``weight``/``bias`` only matter with an activation.
    """
    acc = accumulation_dtype(x.dtype)
    x_hat, pre = _pre_activation(x, mean, invstd, weight, bias, acc)
    dy = activation_grad(grad.to(acc), pre, act, negative_slope)
    dims = _dims(x)
    return dy.sum(dim=dims), (dy * x_hat).sum(dim=dims)


def batch_norm_backward_elemt(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    sum_dy: Tensor | None,
    sum_dy_xhat: Tensor | None,
    count: int,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """``dx = weight * invstd * (dy - sum_dy / count - x_hat * sum_dy_xhat / count)``.

    ``sum_dy``/``sum_dy_xhat`` None: the statistics are constants (inference, frozen BN),
    so ``dx = dy * weight * invstd``.
    """
    acc = accumulation_dtype(x.dtype)
    x_hat, pre = _pre_activation(x, mean, invstd, weight, bias, acc)
    dy = activation_grad(grad.to(acc), pre, act, negative_slope)
    scale = _channel(invstd if weight is None else invstd * weight.to(acc), acc, x)
    if sum_dy is None or sum_dy_xhat is None:
        return _per_channel_output((dy * scale).to(x.dtype), x)
    centered = (
        dy - _channel(sum_dy, acc, x) / count - x_hat * (_channel(sum_dy_xhat, acc, x) / count)
    )
    return _per_channel_output((centered * scale).to(x.dtype), x)


def _per_channel_output(out: Tensor, x: Tensor) -> Tensor:
    """``out`` in the memory format torch's batch norm gives for ``x``."""
    return out.contiguous(memory_format=per_channel_format(x))
