"""Small helpers shared by the BatchNorm variants' functionals."""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends.torch_ops import accumulation_dtype


def fixed_stats(
    input: Tensor, running_mean: Tensor, running_var: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """``(mean, invstd)`` from running statistics, in the input's accumulation dtype."""
    acc = accumulation_dtype(input.dtype)
    return running_mean.to(acc), torch.rsqrt(running_var.to(acc) + eps)
