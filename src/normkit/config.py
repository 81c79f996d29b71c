"""Backend selection: which implementation computes the normalization ops.

Order of precedence, resolved at call time (never captured when a layer is built):

1. an explicit ``backend=`` argument to a ``normkit.functional`` call,
2. the innermost :func:`use_backend` context,
3. the ``NORMKIT_BACKEND`` environment variable, read once, at the first dispatch of the
   process (:func:`reload_environment` reads it again),
4. automatic (:mod:`normkit.backends`): ``"numba"`` for float32/float64 CPU tensors where it
   was measured faster than torch's kernel, else ``"torch"``.

A backend chosen automatically falls back silently; a backend asked for by name raises
:class:`BackendUnavailableError` when it cannot take the tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from normkit._shared import constant_under_compile

ENV_VAR = "NORMKIT_BACKEND"
AUTO = "auto"

_requested: ContextVar[str | None] = ContextVar("normkit_backend", default=None)
_environment: list[str | None] = []  # [value of ENV_VAR] once read


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name does not exist or cannot handle the given tensor."""


@constant_under_compile
def _ambient_backend() -> str | None:
    # Read at trace time under torch.compile: a compiled graph keeps the backend it was
    # traced with (Dynamo cannot trace ContextVar.get).
    name = _requested.get()
    if name is None:
        if not _environment:
            _environment.append(os.environ.get(ENV_VAR) or None)
        name = _environment[0]
    return name


def requested_backend(explicit: str | None = None) -> str | None:
    """The backend name the caller asked for, or ``None`` for automatic selection."""
    name = explicit or _ambient_backend()
    if name is None or name == AUTO:
        return None
    return name


def reload_environment() -> None:
    """Read ``NORMKIT_BACKEND`` again at the next dispatch (it is otherwise read once)."""
    _environment.clear()


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside the block, e.g. ``with use_backend("torch"): model(x)``.

    ``"auto"`` restores automatic selection inside the block.
    """
    from normkit.backends import BACKENDS

    if name != AUTO and name not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown normkit backend {name!r}; expected one of {[AUTO, *BACKENDS]}"
        )
    token = _requested.set(name)
    try:
        yield
    finally:
        _requested.reset(token)
