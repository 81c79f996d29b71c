"""What every numba op needs at call time: the compiled kernel for (name, layout, dtype),
the thread count, the activation codes, and the process state (thread pool, forks).

Importing this module starts Numba's thread pool (it is imported on the first dispatch that
can use the numba backend, never by ``import normkit``). Numba's OpenMP layer shares the
OpenMP runtime with torch; starting it would reset ``torch.get_num_threads()``, so the count
is restored. Kernels use torch's intra-op thread count, never more.
"""

from __future__ import annotations

import os

import torch

from normkit._shared import per_channel_format
from normkit.backends._arrays import NUMPY_DTYPES
from normkit.kernels import ACT_CODES, KERNELS, launch_lock, set_threads, start_threads
from normkit.kernels._common import MIN_CHUNK

__all__ = ["act_code", "kernel", "per_channel_format", "threads", "usable"]

_state = {"usable": True}


def _start() -> str:
    count = torch.get_num_threads()
    layer = start_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return layer


THREADING_LAYER = _start()


def _after_fork_in_child() -> None:
    """GNU OpenMP cannot run parallel regions in a forked child (Numba terminates the child
    on the first launch), e.g. in DataLoader workers: the child computes with torch."""
    if THREADING_LAYER == "omp":
        _state["usable"] = False
        from normkit.backends import forget_decisions

        forget_decisions()


os.register_at_fork(after_in_child=_after_fork_in_child)


def usable() -> bool:
    """False in a forked child of a process that ran OpenMP kernels."""
    return _state["usable"]


_COMPILED: dict[tuple[str, str, torch.dtype], object] = {}
_LOCK = launch_lock()  # only with Numba's workqueue layer, which is not thread-safe


class _Serialized:
    """A kernel called under the workqueue layer's lock."""

    __slots__ = ("fn",)

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, *args):
        with _LOCK:
            return self.fn(*args)


def kernel(name: str, layout: str, dtype: torch.dtype):
    """The compiled kernel ``name`` for ``(layout, dtype)``, memoized per process."""
    key = (name, layout, dtype)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = KERNELS[name].get(layout, NUMPY_DTYPES[dtype])
        if _LOCK is not None:
            fn = _Serialized(fn)
        _COMPILED[key] = fn
    return fn


def threads(numel: int) -> int:
    """Kernel threads for a call over ``numel`` values: torch's intra-op thread count, but
    one thread per ``MIN_CHUNK`` values at least (as torch's own grain size), so a small
    tensor runs on the calling thread without waking the pool (which costs microseconds,
    and far more when the other cores are busy)."""
    return set_threads(min(torch.get_num_threads(), max(1, numel // MIN_CHUNK)))


def act_code(act: str) -> int:
    return ACT_CODES[act]
