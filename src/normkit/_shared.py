"""Small pieces every layer of the stack shares. Importing this module has no side effects
(it registers nothing, starts nothing and reads no environment)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor

#: Activations the BatchNorm+activation path fuses, by name (the numba kernels give each a
#: code; the torch backend applies the torch function of the same name).
ACTIVATIONS = ("identity", "relu", "leaky_relu", "silu", "gelu", "relu6", "hardswish")


def per_channel_format(x: Tensor) -> torch.memory_format:
    """The memory format of torch's batch-norm and group-norm outputs for ``x``:
    channels_last(_3d) for such an input, contiguous for everything else."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def channels_last_empty(x: Tensor) -> Tensor:
    """An uninitialized tensor of ``x (N, C, *)``'s shape, dtype and device whose channel dim
    is the fastest (channels_last for 4-D): the layout the ``permute -> layer_norm -> permute``
    of timm's and torchvision's ``LayerNorm2d`` returns, as a tensor of its own (no view)."""
    shape = x.shape
    strides = [1] * len(shape)
    step = shape[1]
    for dim in range(len(shape) - 1, 1, -1):
        strides[dim] = step
        step *= shape[dim]
    strides[0] = step
    return torch.empty_strided(shape, strides, dtype=x.dtype, device=x.device)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed and returned in: float64 for float64 inputs,
    float32 for every other floating dtype (float32, float16, bfloat16)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class NonFiniteStatisticsWarning(RuntimeWarning):
    """A training batch produced NaN/Inf statistics; the running statistics were kept."""


def constant_under_compile(fn: Callable) -> Callable:
    """``torch.compiler.assume_constant_result(fn)`` without importing Dynamo when it is not
    imported yet: the public decorator imports ``torch._dynamo`` (about a second), which
    ``import normkit`` must not cost. Dynamo's decorator only marks the function, so the
    mark is set directly then (tests/test_compile.py checks Dynamo honours it)."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True  # what torch._dynamo.assume_constant_result sets
    return fn
