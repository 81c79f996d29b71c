"""Frozen batch normalization: fixed statistics and affine, as one scale and shift."""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.functional import _validate as v


def frozen_scale_shift(
    weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``."""
    scale = weight * torch.rsqrt(running_var + eps)
    return scale, bias - running_mean * scale


def frozen_batch_norm(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float = 1e-5,
    *,
    name: str = "frozen_batch_norm",
) -> Tensor:
    r"""BatchNorm inference as one multiply-add per element: ``y = x * scale + shift``.

    .. math::
        \mathrm{scale} = \frac{\gamma}{\sqrt{\mathrm{running\_var} + \epsilon}},\qquad
        \mathrm{shift} = \beta - \mathrm{running\_mean} \cdot \mathrm{scale}

    The same values as ``batch_norm(input, running_mean, running_var, weight, bias,
    training=False, eps=eps)`` up to rounding. Differentiable in ``input`` (``dx = grad *
    scale``); the statistics and the affine parameters are constants.

    Shape: ``input (N, C, *)``, the four per-channel tensors ``(C,)``; output as ``input``,
    in ``input``'s memory layout.
    """
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    channels = input.shape[1]
    for what, t in (
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        v.check_vector(t, channels, what, name)
    v.check_eps(eps, False, name)
    scale, shift = frozen_scale_shift(weight, bias, running_mean, running_var, eps)
    shape = (1, channels) + (1,) * (input.dim() - 2)
    dtype = input.dtype
    return torch.addcmul(shift.to(dtype).reshape(shape), input, scale.to(dtype).reshape(shape))
