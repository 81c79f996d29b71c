"""Argument checks and small helpers shared by the BatchNorm variants' functionals."""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends.torch_ops import accumulation_dtype
from normkit.functional import _validate as v


def check_bn_arguments(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    training: bool,
    name: str,
) -> None:
    """What every per-channel batch normalization checks: a floating ``(N, C, *)`` input,
    ``(C,)`` per-channel tensors, a valid ``eps``."""
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    channels = input.shape[1]
    for what, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        v.check_vector(t, channels, what, name)
    v.check_eps(eps, training, name)


def fixed_stats(
    input: Tensor, running_mean: Tensor, running_var: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """``(mean, invstd)`` from running statistics, in the input's accumulation dtype."""
    acc = accumulation_dtype(input.dtype)
    return running_mean.to(acc), torch.rsqrt(running_var.to(acc) + eps)
