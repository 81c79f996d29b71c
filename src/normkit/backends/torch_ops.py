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

import torch
from torch import Tensor

from normkit.backends import register, register_backend


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _moments(x: Tensor, dims: tuple[int, ...], center: bool) -> tuple[Tensor, Tensor]:
    """mean and biased variance over ``dims`` (keepdim); ``center=False``: mean 0, mean square."""
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

_BN_DIMS = (0, 2)


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    return (1, x.shape[1], 1)


def batch_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Training forward. ``x (N, C, L)`` -> ``(y (N, C, L), mean (C,), var (C,))``."""
    y, mean, var = normalize_forward(x, _BN_DIMS, _channel_shape(x), weight, bias, eps)
    return y, mean.reshape(-1), var.reshape(-1)


def batch_norm_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Training backward -> ``(dx, dweight or None, dbias)``."""
    shape = _channel_shape(x)
    return normalize_backward(
        grad, x, _BN_DIMS, shape, weight, mean.reshape(shape), var.reshape(shape), eps
    )


def batch_norm_eval_forward(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """Inference forward with fixed statistics: ``(x - running_mean) / sqrt(running_var + eps)``."""
    acc = accumulation_dtype(x.dtype)
    shape = _channel_shape(x)
    mean = running_mean.to(acc).reshape(shape)
    rstd = torch.rsqrt(running_var.to(acc).reshape(shape) + eps)
    y = _apply_affine((x.to(acc) - mean) * rstd, weight, bias, shape)
    return y.to(x.dtype)


def batch_norm_eval_backward(
    grad: Tensor,
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Inference backward: the statistics are constants, so ``dx = grad * weight * rstd``."""
    acc = accumulation_dtype(x.dtype)
    shape = _channel_shape(x)
    g = grad.to(acc)
    rstd = torch.rsqrt(running_var.to(acc).reshape(shape) + eps)
    x_hat = (x.to(acc) - running_mean.to(acc).reshape(shape)) * rstd
    scale = rstd * weight.to(acc).reshape(shape) if weight is not None else rstd
    dweight = (g * x_hat).sum(dim=_BN_DIMS) if weight is not None else None
    dbias = g.sum(dim=_BN_DIMS)
    return (g * scale).to(x.dtype), _flat(dweight), _flat(dbias)


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


def _supports(x: Tensor) -> bool:
    return True


register_backend("torch", _supports)
for _name, _fn in {
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
    "batch_norm_eval_forward": batch_norm_eval_forward,
    "batch_norm_eval_backward": batch_norm_eval_backward,
    "group_norm_forward": group_norm_forward,
    "group_norm_backward": group_norm_backward,
    "row_norm_forward": row_norm_forward,
    "row_norm_backward": row_norm_backward,
}.items():
    register(_name, "torch", _fn)
