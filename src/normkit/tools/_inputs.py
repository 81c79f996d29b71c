"""Turning an input size or an example into forward-pass arguments (summary, doctor, CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from normkit.tools._walk import model_device_dtype


def make_inputs(
    spec: Any,
    model: nn.Module,
    dtypes: Sequence[torch.dtype] | None,
    error: type[Exception] = ValueError,
    who: str = "normkit",
):
    """``(args, kwargs)`` for the forward pass from an input size or an example."""
    device, dtype = model_device_dtype(model)
    if spec is None:
        return None
    if isinstance(spec, Tensor):
        return (spec,), {}
    if isinstance(spec, dict):
        return (), spec
    if isinstance(spec, torch.Size) or (
        isinstance(spec, (tuple, list)) and spec and all(isinstance(s, int) for s in spec)
    ):
        sizes = [tuple(spec)]
    elif isinstance(spec, (tuple, list)) and spec and all(isinstance(s, Tensor) for s in spec):
        return tuple(spec), {}
    elif (
        isinstance(spec, (tuple, list))
        and spec
        and all(isinstance(s, (tuple, list, torch.Size)) for s in spec)
    ):
        sizes = [tuple(s) for s in spec]
    else:
        raise error(
            f"{who}: expected an input size such as (1, 3, 32, 32) (batch dim included), a "
            f"list of sizes, an example tensor, a tuple of tensors or a dict; got {spec!r}"
        )
    for size in sizes:
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
            raise error(f"{who}: input sizes must be positive integers, got {size}")
    dtypes = list(dtypes) if dtypes is not None else [dtype] * len(sizes)
    if len(dtypes) != len(sizes):
        raise error(f"{who}: {len(sizes)} input sizes but {len(dtypes)} dtypes")
    generator = torch.Generator(device="cpu").manual_seed(0)
    inputs = []
    for size, dt in zip(sizes, dtypes, strict=True):
        if dt.is_floating_point:
            t = torch.randn(size, generator=generator, dtype=dt)
        else:
            t = torch.zeros(size, dtype=dt)
        inputs.append(t.to(device))
    return tuple(inputs), {}


def run_model(model: nn.Module, inputs: tuple[tuple, dict]) -> Any:
    args, kwargs = inputs
    return model(*args, **kwargs)


def parse_size(text: str) -> tuple[int, ...] | list[tuple[int, ...]]:
    """``"8,3,32,32"`` -> ``(8, 3, 32, 32)``; ``"2,3;2,10"`` -> two input sizes."""
    try:
        sizes = [tuple(int(v) for v in part.split(",") if v.strip()) for part in text.split(";")]
    except ValueError as exc:
        raise ValueError(
            f"an input size is comma-separated integers such as 8,3,32,32, got {text!r}"
        ) from exc
    return sizes[0] if len(sizes) == 1 else sizes
