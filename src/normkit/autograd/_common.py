"""Helpers shared by the autograd bridges (:mod:`.ops` and :mod:`.batch_norm_variants`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def dtype_of(t: Tensor | None) -> torch.dtype | None:
    return None if t is None else t.dtype


def cast_grad(grad: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    """A parameter gradient in the parameter's dtype (``None`` if there is no parameter)."""
    if grad is None or dtype is None:
        return None
    return grad if grad.dtype == dtype else grad.to(dtype)


def with_strides_of(t: Tensor, like: Tensor) -> Tensor:
    """``t`` with ``like``'s strides (what a custom op's fake implementation promised)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


def differentiable_grads(
    forward: Callable[..., Tensor],
    inputs: Sequence[Tensor | None],
    grad: Tensor,
    needs: Sequence[bool],
) -> list[Tensor | None]:
    """Gradients with a graph (for ``create_graph=True``), by differentiating ``forward``."""
    wanted = [
        i for i, (t, need) in enumerate(zip(inputs, needs, strict=True)) if need and t is not None
    ]
    out: list[Tensor | None] = [None] * len(inputs)
    if not wanted:
        return out
    with torch.enable_grad():
        y = forward(*inputs)
        grads = torch.autograd.grad(
            y, [inputs[i] for i in wanted], grad, create_graph=True, allow_unused=True
        )
    for i, g in zip(wanted, grads, strict=True):
        out[i] = g
    return out
