"""normkit's registered operators (``torch.ops.normkit.*``) and the helpers every autograd
bridge shares.

Each op is defined once with a schema, a real implementation and a fake (meta)
implementation, so the same op serves eager calls and ``torch.compile`` graphs (opaque nodes
with known output shapes). The library is created when the first op is defined (the modules
defining ops import on first use of a backend, except the few that the functional layer
itself needs).

What :func:`define` returns calls the implementation directly when nothing but plain eager
execution could observe the call (no compilation, no dispatch mode such as FakeTensorMode or
make_fx's proxy mode, no torch.func transform, no tensor subclass as first argument): the dispatcher's round trip through Python
costs more than torch's whole kernel on a small tensor (see docs/kernels.md). Otherwise it
calls the registered op, which every tracer sees as one opaque node.
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


_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_active = torch._C._are_functorch_transforms_active
# A tensor subclass (FakeTensor, DTensor, a wrapper subclass) must meet the dispatcher.
_PLAIN = (torch.Tensor, torch.nn.Parameter, type(None))


class Op:
    """A registered op, called directly in plain eager execution (module docstring).

    ``op`` is the registered default overload (``torch.ops.normkit.<name>.default``),
    ``impl`` its implementation."""

    __slots__ = ("impl", "op")

    def __init__(self, op: torch._ops.OpOverload, impl: Callable) -> None:
        self.op, self.impl = op, impl

    def __call__(self, *args):
        if (
            type(args[0]) in _PLAIN
            and not torch.compiler.is_compiling()
            and not _dispatch_modes()
            and not _functorch_active()
        ):
            return self.impl(*args)
        return self.op(*args)

    def __repr__(self) -> str:
        return f"normkit.Op({self.op})"


def define(
    schema: str,
    impl: Callable,
    fake: Callable,
    dispatch_key: str = "CPU",
) -> Op:
    """Define ``normkit::<schema>`` with ``impl`` for ``dispatch_key`` and its fake; returns
    the :class:`Op` callers call."""
    lib = library()
    name = schema.split("(", 1)[0]
    lib.define(schema)
    lib.impl(name, impl, dispatch_key)
    torch.library.register_fake(f"normkit::{name}", fake, lib=lib)
    return Op(getattr(torch.ops.normkit, name).default, impl)


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
