"""Backend selection: which implementation computes the normalization ops.

Order of precedence, resolved at call time (never captured when a layer is built):

1. an explicit ``backend=`` argument to a ``normkit.functional`` call,
2. the innermost :func:`use_backend` context,
3. the ``NORMKIT_BACKEND`` environment variable,
4. automatic: the fastest registered backend that supports the tensor
   (``"numba"`` for float32/float64 CPU tensors once the kernels exist), else ``"torch"``.

A backend chosen automatically falls back silently; a backend asked for by name raises
:class:`BackendUnavailableError` when it cannot take the tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ENV_VAR = "NORMKIT_BACKEND"
AUTO = "auto"

_requested: ContextVar[str | None] = ContextVar("normkit_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name does not exist or cannot handle the given tensor."""


def requested_backend(explicit: str | None = None) -> str | None:
    """The backend name the caller asked for, or ``None`` for automatic selection."""
    name = explicit or _requested.get() or os.environ.get(ENV_VAR) or None
    if name is None or name == AUTO:
        return None
    return name


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside the block, e.g. ``with use_backend("torch"): model(x)``.

    ``"auto"`` restores automatic selection inside the block.
    """
    from normkit.backends import backend_names

    if name != AUTO and name not in backend_names():
        raise BackendUnavailableError(
            f"unknown normkit backend {name!r}; expected one of {[AUTO, *backend_names()]}"
        )
    token = _requested.set(name)
    try:
        yield
    finally:
        _requested.reset(token)
