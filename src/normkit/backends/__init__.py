"""The dispatch table: the only place that knows which implementations exist.

Implementations are registered per ``(op, backend)``. Every op a backend registers has the
signature documented in :mod:`normkit.backends.torch_ops` (the reference implementation of
each op, built from composite torch ops). A backend also registers a ``supports(tensor)``
predicate; :func:`get_impl` resolves the backend for a given input at call time.

Backends other than ``"torch"`` live in modules that are imported lazily, on the first call
that could use them, so ``import normkit`` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

import torch

from normkit.config import BackendUnavailableError, requested_backend

_log = logging.getLogger(__name__)

# Preference order for automatic selection; the last entry must support every tensor.
_PREFERENCE: list[str] = ["numba", "torch"]
_LAZY_MODULES: dict[str, str] = {
    "numba": "normkit.backends.numba_backend",
    "torch": "normkit.backends.torch_ops",
}
_IMPLS: dict[tuple[str, str], Callable] = {}
_SUPPORTS: dict[str, Callable[[torch.Tensor], bool]] = {}
_LOAD_FAILED: dict[str, str] = {}


def register(op: str, backend: str, fn: Callable) -> Callable:
    """Register ``fn`` as the implementation of ``op`` on ``backend``."""
    _IMPLS[(op, backend)] = fn
    return fn


def register_backend(backend: str, supports: Callable[[torch.Tensor], bool]) -> None:
    """Declare a backend and the predicate telling which tensors it accepts."""
    _SUPPORTS[backend] = supports


def backend_names() -> list[str]:
    """Names of all known backends, loaded or not."""
    return list(_PREFERENCE)


def _load(backend: str) -> bool:
    if backend in _SUPPORTS:
        return True
    if backend in _LOAD_FAILED or backend not in _LAZY_MODULES:
        return False
    try:
        importlib.import_module(_LAZY_MODULES[backend])
    except ImportError as exc:  # e.g. numba missing, or the kernels not built yet
        _LOAD_FAILED[backend] = str(exc)
        _log.debug("normkit backend %r unavailable: %s", backend, exc)
        return False
    return backend in _SUPPORTS


def available() -> list[str]:
    """Backends that loaded successfully on this machine."""
    return [name for name in _PREFERENCE if _load(name)]


def get_impl(op: str, sample: torch.Tensor, backend: str | None = None) -> Callable:
    """The implementation of ``op`` to run for input ``sample``.

    ``backend`` (or the context/env-var choice, see :mod:`normkit.config`) forces a backend
    and raises :class:`BackendUnavailableError` if it cannot take ``sample``; otherwise the
    first backend in preference order that implements ``op`` and supports ``sample`` wins.
    """
    name = requested_backend(backend)
    if name is not None:
        if name not in _LAZY_MODULES:
            raise BackendUnavailableError(
                f"unknown normkit backend {name!r}; expected one of {['auto', *_PREFERENCE]}"
            )
        if not _load(name):
            raise BackendUnavailableError(
                f"normkit backend {name!r} could not be loaded: {_LOAD_FAILED.get(name)}"
            )
        fn = _IMPLS.get((op, name))
        if fn is None:
            raise BackendUnavailableError(f"normkit backend {name!r} does not implement {op!r}")
        if not _SUPPORTS[name](sample):
            raise BackendUnavailableError(
                f"normkit backend {name!r} cannot run {op!r} on a {sample.dtype} tensor "
                f"on device {sample.device.type!r} (layout {tuple(sample.stride())} strides)"
            )
        return fn
    for candidate in _PREFERENCE:
        if not _load(candidate):
            continue
        fn = _IMPLS.get((op, candidate))
        if fn is not None and _SUPPORTS[candidate](sample):
            return fn
    raise BackendUnavailableError(f"no normkit backend implements {op!r}")  # pragma: no cover
