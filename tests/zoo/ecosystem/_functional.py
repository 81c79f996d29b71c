"""Computations several stand-ins share (each original writes them out per class)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["drop_num_batches_tracked", "frozen_batch_norm", "layer_norm_channels_first"]


def layer_norm_channels_first(
    x: Tensor, shape: tuple[int, ...], weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """LayerNorm over dim 1 of (N, C, H, W): permute to NHWC, ``F.layer_norm``, permute back
    (the result is a permuted view of a channels-last tensor)."""
    x = F.layer_norm(x.permute(0, 2, 3, 1), shape, weight, bias, eps)
    return x.permute(0, 3, 1, 2)


def frozen_batch_norm(
    x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, eps: float
) -> Tensor:
    """x * scale + (bias - running_mean * scale), scale = weight * rsqrt(running_var + eps),
    per channel of (N, C, H, W) (torchvision's fuser-friendly form)."""
    shape = (1, -1, 1, 1)
    scale = weight.reshape(shape) * (running_var.reshape(shape) + eps).rsqrt()
    shift = bias.reshape(shape) - running_mean.reshape(shape) * scale
    return x * scale + shift


def drop_num_batches_tracked(state_dict: dict, prefix: str) -> None:
    """A BatchNorm checkpoint's ``num_batches_tracked`` has no place in a frozen layer."""
    state_dict.pop(prefix + "num_batches_tracked", None)
