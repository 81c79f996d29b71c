"""The ``"torch"`` backend: every op built from composite torch operations.

This is the fallback for anything the compiled kernels do not cover (CUDA, float16,
bfloat16, exotic layouts) and the definition of each op's contract. All ops are plain,
differentiable torch code, which is also what makes double backward work: the autograd
bridge recomputes through these functions when a graph of the gradient is requested.

Canonical shapes (the functional layer reshapes to these; any strides are accepted):

* batch norm: ``x`` is ``(N, C, L)``; statistics per channel over ``(N, L)``.
* group norm: ``x`` is ``(N, C, L)`` with ``C = G * K``; statistics per ``(n, g)`` over
  ``(K, L)``; affine per channel. Instance norm is group norm with ``G = C``.
* row norm: ``x`` is ``(R, D)``; statistics per row; affine per column. LayerNorm is
  ``center=True``, RMSNorm ``center=False`` (mean taken as 0, "var" the mean square).

Statistics are returned in the accumulation dtype (float64 for float64 inputs, float32
otherwise); ``var`` is always the biased variance (or mean square), never ``1/std``.
Outputs keep the input's dtype and memory layout; parameter gradients come back flat, in
the accumulation dtype (the autograd bridge casts them to the parameters' dtype).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normkit.backends import register, register_backend


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _moments(x: Tensor, dims: tuple[int, ...], center: bool) -> tuple[Tensor, Tensor]:
    """mean and biased variance over ``dims`` (keepdim); ``center=False``: mean 0, mean square."""
    if x.numel() == 0:  # empty groups: NaN statistics, as torch's own kernels give
        nan = x.sum(dim=dims, keepdim=True) / 0.0
        return nan, nan.clone()
    if center:
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        return mean, var
    return torch.zeros((), dtype=x.dtype, device=x.device), x.square().mean(dim=dims, keepdim=True)


def _affine_dims(affine_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Dims along which an affine parameter of ``affine_shape`` is broadcast (to sum its grad)."""
    return tuple(d for d, size in enumerate(affine_shape) if size == 1)


def normalize_forward(
    x: Tensor,
    dims: tuple[int, ...],
    affine_shape: tuple[int, ...],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    center: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """The one math core: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    ``mean``/``var`` are taken over ``dims``; ``weight``/``bias`` are viewed as
    ``affine_shape``. Returns ``(y, mean, var)`` with the statistics keepdim-shaped.
    """
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    mean, var = _moments(xa, dims, center)
    y = (xa - mean) * torch.rsqrt(var + eps)
    y = _apply_affine(y, weight, bias, affine_shape)
    return y.to(x.dtype), mean, var


def _apply_affine(
    x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, affine_shape: tuple[int, ...]
) -> Tensor:
    acc = x_hat.dtype
    if weight is not None:
        x_hat = x_hat * weight.to(acc).reshape(affine_shape)
    if bias is not None:
        x_hat = x_hat + bias.to(acc).reshape(affine_shape)
    return x_hat


def normalize_backward(
    grad: Tensor,
    x: Tensor,
    dims: tuple[int, ...],
    affine_shape: tuple[int, ...],
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    center: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`normalize_forward` given the saved statistics.

    With ``g_hat = grad * weight``, ``x_hat = (x - mean) * rstd`` and means over ``dims``::

        dx      = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))   # center
        dx      = rstd * (g_hat - x_hat * mean(g_hat * x_hat))                  # no center
        dweight = sum(grad * x_hat)   over the broadcast dims
        dbias   = sum(grad)           over the broadcast dims

    (DESIGN.md's ``gamma * invstd / n * (n*g - sum(g) - x_hat * sum(g * x_hat))``.)
    """
    acc = accumulation_dtype(x.dtype)
    g = grad.to(acc)
    rstd = torch.rsqrt(var + eps)
    x_hat = (x.to(acc) - mean) * rstd
    param_dims = _affine_dims(affine_shape)
    dweight = (g * x_hat).sum(dim=param_dims) if weight is not None else None
    dbias = g.sum(dim=param_dims)
    g_hat = g * weight.to(acc).reshape(affine_shape) if weight is not None else g
    proj = (g_hat * x_hat).mean(dim=dims, keepdim=True)
    centered = g_hat - g_hat.mean(dim=dims, keepdim=True) if center else g_hat
    dx = rstd * (centered - x_hat * proj)
    return dx.to(x.dtype), _flat(dweight), _flat(dbias)


def _flat(grad: Tensor | None) -> Tensor | None:
    return None if grad is None else grad.reshape(-1)


# ---------------------------------------------------------------------------------------
# Batch norm: x (N, C, L), statistics per channel.
#
# BatchNorm is composed from four primitives (PyTorch's own decomposition), so that sync BN
# (an all-reduce between them), batch renorm (r, d folded into weight/bias), frozen BN and
# fused activations reuse them unchanged:
#
#   batch_norm_stats            x -> mean, var                              (one read)
#   batch_norm_elemt            y = act((x - mean) * invstd * weight + bias)  (read, write)
#   batch_norm_backward_reduce  sum(dy), sum(dy * x_hat)                    (two reads)
#   batch_norm_backward_elemt   dx = weight * invstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n)
#
# where dy = grad * act'(pre) is the gradient before the activation. ``act`` is one of
# ACTIVATIONS; ``negative_slope`` is leaky_relu's. Per-channel vectors are (C,).

_BN_DIMS = (0, 2)
ACTIVATIONS = ("identity", "relu", "leaky_relu", "silu", "gelu")


def _channel(v: Tensor | None, acc: torch.dtype) -> Tensor | None:
    return None if v is None else v.to(acc).reshape(1, -1, 1)


def activation(pre: Tensor, act: str, negative_slope: float = 0.01) -> Tensor:
    """``act(pre)`` for the fused activations (gelu is the exact, erf-based one)."""
    if act == "identity":
        return pre
    if act == "relu":
        return torch.relu(pre)
    if act == "leaky_relu":
        return torch.nn.functional.leaky_relu(pre, negative_slope)
    if act == "silu":
        return torch.nn.functional.silu(pre)
    if act == "gelu":
        return torch.nn.functional.gelu(pre)
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


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
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def batch_norm_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean (C,), var (C,))`` of ``x (N, C, L)``; biased variance."""
    mean, var = _moments(x.to(accumulation_dtype(x.dtype)), _BN_DIMS, True)
    return mean.reshape(-1), var.reshape(-1)


def _pre_activation(x, mean, invstd, weight, bias, acc):
    x_hat = (x.to(acc) - _channel(mean, acc)) * _channel(invstd, acc)
    return x_hat, _apply_affine(x_hat, weight, bias, (1, -1, 1))


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
    return activation(pre, act, negative_slope).to(x.dtype)


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
    return dy.sum(dim=_BN_DIMS), (dy * x_hat).sum(dim=_BN_DIMS)


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
    scale = _channel(invstd, acc) if weight is None else _channel(invstd * weight.to(acc), acc)
    if sum_dy is None or sum_dy_xhat is None:
        return (dy * scale).to(x.dtype)
    centered = dy - _channel(sum_dy, acc) / count - x_hat * (_channel(sum_dy_xhat, acc) / count)
    return (centered * scale).to(x.dtype)


def batch_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Training forward. ``x (N, C, L)`` -> ``(y (N, C, L), mean (C,), var (C,))``."""
    mean, var = batch_norm_stats(x)
    y = batch_norm_elemt(x, mean, torch.rsqrt(var + eps), weight, bias)
    return y, mean, var


def batch_norm_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Training backward -> ``(dx, dweight or None, dbias)``."""
    invstd = torch.rsqrt(var + eps)
    sum_dy, sum_dy_xhat = batch_norm_backward_reduce(grad, x, mean, invstd)
    count = x.shape[0] * x.shape[2]
    dx = batch_norm_backward_elemt(grad, x, mean, invstd, weight, None, sum_dy, sum_dy_xhat, count)
    return dx, sum_dy_xhat if weight is not None else None, sum_dy


def batch_norm_eval_forward(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """Inference forward with fixed statistics: ``(x - running_mean) / sqrt(running_var + eps)``."""
    invstd = torch.rsqrt(running_var.to(accumulation_dtype(x.dtype)) + eps)
    return batch_norm_elemt(x, running_mean, invstd, weight, bias)


def batch_norm_eval_backward(
    grad: Tensor,
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Inference backward: the statistics are constants, so ``dx = grad * weight * rstd``."""
    invstd = torch.rsqrt(running_var.to(accumulation_dtype(x.dtype)) + eps)
    sum_dy, sum_dy_xhat = batch_norm_backward_reduce(grad, x, running_mean, invstd)
    dx = batch_norm_backward_elemt(grad, x, running_mean, invstd, weight, None, None, None, 0)
    return dx, sum_dy_xhat if weight is not None else None, sum_dy


# ---------------------------------------------------------------------------------------
# Group norm: x (N, C, L) viewed as (N, G, K, L), statistics per (n, g).


def _grouped(x: Tensor, groups: int) -> Tensor:
    n, c, length = x.shape
    return x.reshape(n, groups, c // groups, length)


def group_norm_forward(
    x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``x (N, C, L)`` -> ``(y (N, C, L), mean (N, G), var (N, G))``."""
    xg = _grouped(x, groups)
    shape = (1, groups, x.shape[1] // groups, 1)
    y, mean, var = normalize_forward(xg, (2, 3), shape, weight, bias, eps)
    return y.reshape(x.shape), mean.reshape(x.shape[0], groups), var.reshape(x.shape[0], groups)


def group_norm_backward(
    grad: Tensor,
    x: Tensor,
    groups: int,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    xg = _grouped(x, groups)
    shape = (1, groups, x.shape[1] // groups, 1)
    stat_shape = (x.shape[0], groups, 1, 1)
    dx, dweight, dbias = normalize_backward(
        _grouped(grad, groups),
        xg,
        (2, 3),
        shape,
        weight,
        mean.reshape(stat_shape),
        var.reshape(stat_shape),
        eps,
    )
    return dx.reshape(x.shape), dweight, dbias


# ---------------------------------------------------------------------------------------
# Row norm: x (R, D), statistics per row. LayerNorm (center) and RMSNorm (no center).


def row_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, center: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``x (R, D)`` -> ``(y (R, D), mean (R,), var (R,))``; RMS: mean 0, var = mean(x**2)."""
    y, mean, var = normalize_forward(x, (1,), (1, x.shape[1]), weight, bias, eps, center)
    if not center:
        mean = torch.zeros_like(var)
    return y, mean.reshape(-1), var.reshape(-1)


def row_norm_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    center: bool,
) -> tuple[Tensor, Tensor | None, Tensor]:
    return normalize_backward(
        grad,
        x,
        (1,),
        (1, x.shape[1]),
        weight,
        mean.reshape(-1, 1),
        var.reshape(-1, 1),
        eps,
        center,
    )


@torch.no_grad()
def running_stats_update(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    factor: float,
    bessel: float,
) -> bool:
    """Fold one batch's statistics into running buffers, in place, if they are finite.

    ``running_mean = lerp(running_mean, batch_mean, factor)`` and ``running_var =
    lerp(running_var, batch_var * bessel, factor)`` (either buffer may be None), where
    ``lerp(r, s, f) = r + f * (s - r)``. When any batch statistic is NaN/Inf nothing is
    written and the result is False (the caller warns); True otherwise. One host sync.
    """
    if not _all_finite(batch_mean, batch_var):
        return False
    if running_mean is not None:
        running_mean.lerp_(batch_mean.to(running_mean.dtype), factor)
    if running_var is not None:
        running_var.lerp_(batch_var.to(running_var.dtype) * bessel, factor)
    return True


def _all_finite(*tensors: Tensor) -> bool:
    """No NaN/Inf in any of the tensors (one host sync).

    A float64 sum is non-finite exactly when an element is: float32 statistics cannot
    overflow it (and float64 ones only beyond 1e308 / numel, far outside any real batch).
    """
    return math.isfinite(sum(t.sum(dtype=torch.float64).item() for t in tensors))


def _supports(x: Tensor) -> bool:
    return True


register_backend("torch", _supports)
for _name, _fn in {
    "batch_norm_stats": batch_norm_stats,
    "batch_norm_elemt": batch_norm_elemt,
    "batch_norm_backward_reduce": batch_norm_backward_reduce,
    "batch_norm_backward_elemt": batch_norm_backward_elemt,
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
    "batch_norm_eval_forward": batch_norm_eval_forward,
    "batch_norm_eval_backward": batch_norm_eval_backward,
    "group_norm_forward": group_norm_forward,
    "group_norm_backward": group_norm_backward,
    "row_norm_forward": row_norm_forward,
    "row_norm_backward": row_norm_backward,
    "running_stats_update": running_stats_update,
}.items():
    register(_name, "torch", _fn)
