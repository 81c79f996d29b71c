"""normkit's registered operators (``torch.ops.normkit.*``) and the helpers every autograd
bridge shares.

Each op is defined once with a schema, a real implementation and a fake (meta)
implementation, so the same op serves eager calls (two dispatcher hops, about 2 us) and
``torch.compile`` graphs (opaque nodes with known output shapes). The library is created
when the first op is defined (the modules defining ops import on first use of a backend,
except the few that the functional layer itself needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_LIBRARY: list[torch.library.Library] = []


def library() -> torch.library.Library:
    """The ``normkit`` operator library (created on first use)."""
    if not _LIBRARY:
        _LIBRARY.append(torch.library.Library("normkit", "DEF"))
    return _LIBRARY[0]


def define(
    schema: str,
    impl: Callable,
    fake: Callable,
    dispatch_key: str = "CPU",
) -> Callable:
    """Define ``normkit::<schema>`` with ``impl`` for ``dispatch_key`` and its fake; returns
    the op's default overload (what callers call)."""
    lib = library()
    name = schema.split("(", 1)[0]
    lib.define(schema)
    lib.impl(name, impl, dispatch_key)
    torch.library.register_fake(f"normkit::{name}", fake, lib=lib)
    return getattr(torch.ops.normkit, name).default


def dtype_of(t: Tensor | None) -> torch.dtype | None:
    return None if t is None else t.dtype


def cast_grad(grad: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    """A parameter gradient in the parameter's dtype (``None`` if there is no parameter)."""
    if grad is None or dtype is None:
        return None
    return grad if grad.dtype == dtype else grad.to(dtype)


def needs_autograd(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def differentiable_grads(
    forward: Callable[..., Tensor],
    inputs: Sequence[Tensor | None],
    grad: Tensor,
    needs: Sequence[bool],
) -> list[Tensor | None]:
    """Gradients with a graph (``create_graph=True``), by differentiating ``forward``, a
    composition of differentiable torch ops (the double-backward path of every bridge)."""
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
