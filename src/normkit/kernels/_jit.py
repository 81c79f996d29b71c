"""Shared Numba machinery: compile options, lazy typed entry points, threads, cache location.

Rules this module enforces for every kernel in :mod:`normkit.kernels` (docs/kernels.md
explains each with its measurement):

* ``cache=True, nogil=True`` and only the named fast-math flags ``reassoc`` (vectorized
  reductions), ``contract`` (FMA), ``nsz`` and ``arcp``; never ``nnan``/``ninf``, because
  NaN/Inf propagation is observable. ``error_model="numpy"``: division by zero gives inf/NaN
  instead of raising, so divisions vectorize.
* Nothing compiles at import. An :class:`Entry` is a driver function plus a signature
  template; ``entry.get(np.float32)`` compiles (or loads from the on-disk cache) exactly one
  eagerly-typed dispatcher per dtype, on first use, with compilation disabled afterwards, so a
  strided (``'A'``) array can never trigger a silent re-specialisation: it raises TypeError.
* Parallel kernels are called only from non-parallel drivers (one ``prange`` per parallel
  function, nothing else in it), so Python pays one dispatch per operation.
"""

from __future__ import annotations

import hashlib
import os
import threading
import types
from collections.abc import Callable

import numba
import numpy as np

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_OPTIONS = {"cache": True, "nogil": True, "fastmath": FASTMATH, "error_model": "numpy"}

# Element types the kernels are compiled for, by NumPy dtype.
DTYPES: dict[np.dtype, str] = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def cache_dir(dispatcher) -> str:
    """Where Numba keeps the on-disk cache of a compiled ``dispatcher`` (Numba's own choice:
    ``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` next to the sources when writable, else
    a per-user cache directory)."""
    cache = getattr(dispatcher, "_cache", None)
    return getattr(cache, "_cache_path", "") or ""


def kernel(fn: Callable | None = None, *, parallel: bool = False, inline: bool = False):
    """``@kernel`` / ``@kernel(parallel=True)``: a lazily typed helper called from drivers.

    Helpers are not cached on their own (``cache=False``): a cached driver stores its
    helpers' machine code with it, and uncached helpers cannot race in the on-disk cache
    when several processes (pytest-xdist workers) compile different variants at once.
    ``inline=True`` inlines the helper into its callers in Numba's IR (measured: a short
    loop called once per 49-value plane ran 1.6x faster inlined than as a call).
    """

    def wrap(f):
        options = dict(_OPTIONS, cache=False)
        if inline:
            options["inline"] = "always"
        return numba.njit(parallel=parallel, **options)(f)

    return wrap(fn) if fn is not None else wrap


class Entry:
    """A driver compiled per (layout, element type) on first use, with explicit signatures.

    ``signatures`` maps a layout name (``"ncl"``, ``"nlc"``, ``"rows"``, ...) to a Numba
    signature string in which ``{t}`` stands for the element type (``float32`` or
    ``float64``), e.g. ``"void({t}[:, :, ::1], {t}[::1])"``. Each (layout, dtype) variant
    is compiled from its own copy of the function, named ``<name>__<layout>_<dtype>``, so
    it has its own cache files (no cross-variant races between processes).
    """

    def __init__(self, fn: Callable, signatures: dict[str, str]) -> None:
        self.fn = fn
        self.signatures = signatures
        self.name = fn.__name__
        self._compiled: dict[tuple[str, np.dtype], Callable] = {}
        self._lock = threading.Lock()
        self.__doc__ = fn.__doc__

    def variants(self) -> list[tuple[str, np.dtype]]:
        """Every (layout, dtype) this entry can be compiled for."""
        return [(layout, dtype) for layout in self.signatures for dtype in DTYPES]

    def get(self, layout: str, dtype) -> Callable:
        """The dispatcher for ``(layout, dtype)`` (compiled or loaded from the cache once)."""
        key = (layout, np.dtype(dtype))
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key)
                if compiled is None:
                    compiled = self._compile(*key)
                    self._compiled[key] = compiled
        return compiled

    def _compile(self, layout: str, dtype: np.dtype) -> Callable:
        tname = DTYPES[dtype]
        fn = self.fn
        variant = types.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
        # The digest of every kernel source file is part of the name (hence of the cache
        # files): Numba only checks the defining file, so an edited helper in another
        # module would otherwise come back from the cache in its old version.
        variant.__qualname__ = f"{fn.__qualname__}__{layout}_{tname}_{sources_digest()}"
        variant.__module__ = fn.__module__
        variant.__doc__ = fn.__doc__
        return numba.njit(self.signatures[layout].format(t=tname), **_OPTIONS)(variant)

    def __repr__(self) -> str:
        done = [f"{layout}/{dtype}" for layout, dtype in self._compiled]
        return f"<normkit kernel {self.name} compiled for {done}>"


_DIGEST: list[str] = []


def sources_digest() -> str:
    """A short hash of the sources of ``normkit.kernels`` (all its ``.py`` files)."""
    if not _DIGEST:
        digest = hashlib.sha256()
        folder = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as handle:
                    digest.update(name.encode() + b"\0" + handle.read())
        _DIGEST.append(digest.hexdigest()[:12])
    return _DIGEST[0]


def entry(**signatures: str) -> Callable[[Callable], Entry]:
    """Decorator: ``@entry(ncl="void(...)", nlc="void(...)")`` turns a driver into an Entry."""

    def wrap(fn: Callable) -> Entry:
        return Entry(fn, signatures)

    return wrap


# ---------------------------------------------------------------------------------------
# Threads.

_local = threading.local()
_serial_lock = threading.Lock()
_launch_lock: threading.Lock | None = None


def start_threads() -> str:
    """Start Numba's thread pool now (idempotent) and return the threading layer's name.

    Starting the OpenMP layer calls ``omp_set_num_threads(NUMBA_NUM_THREADS)`` on the
    calling thread; when torch shares that OpenMP runtime (it does when torch is imported
    first) this changes ``torch.get_num_threads()``. Callers that care (the numba backend)
    save and restore torch's count around this call.
    """
    global _launch_lock
    numba.get_num_threads()  # launches the pool
    layer = numba.threading_layer()
    # workqueue is not thread-safe: serialize kernel calls when it is the only layer.
    _launch_lock = _serial_lock if layer == "workqueue" else None
    return layer


def launch_lock() -> threading.Lock | None:
    """A lock to hold around kernel calls (only with the non-thread-safe workqueue layer)."""
    return _launch_lock


def set_threads(count: int) -> int:
    """Use ``count`` threads (clamped to Numba's pool) for kernels called from this thread.

    Numba's thread count is per calling thread; this remembers the last value per thread so
    the common case costs one attribute lookup.
    """
    count = max(1, min(int(count), numba.config.NUMBA_NUM_THREADS))
    if getattr(_local, "threads", None) != count:
        numba.set_num_threads(count)
        _local.threads = count
    return count
