"""Reuse of large output buffers, so that a training step does not page-fault them afresh.

glibc returns large freed blocks to the OS (``mmap``/trim thresholds), so each new output of
tens of megabytes is faulted in page by page on first write: on this project's machine that
cost more than the normalization itself (22 ms to ``clone`` a 51 MB tensor; docs/kernels.md).
The numba backend takes its large outputs (``y``, ``dx``) from this pool when it is on.

A buffer is handed out again only when nothing else refers to its storage any more: the
pool keeps the storage and checks its use count, which every tensor, view, NumPy array,
saved-for-backward tensor or ``untyped_storage()`` object that still sees the memory
raises. So reuse is invisible to the caller: an output is always memory nobody else holds.
Handed-out tensors are ordinary (not views), so in-place ops on them work as usual.

Bounds: only buffers of at least ``min_bytes`` (1 MiB) are pooled, and the pool holds at
most ``max_bytes`` in total, evicting the least recently used idle buffers first; beyond
that, outputs are allocated normally. ``NORMKIT_BUFFER_POOL_MB`` sets ``max_bytes``
(default 0: the pool is off). :meth:`BufferPool.release` frees the idle buffers.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import torch
from torch import Tensor

ENV_VAR = "NORMKIT_BUFFER_POOL_MB"
# Private but long-standing (torch's inductor uses it); without it the pool stays off.
_use_count = getattr(torch._C, "_storage_Use_Count", None)


class _Slot:
    """One pooled storage and its use count when only the pool holds it."""

    __slots__ = ("idle", "idle_py", "nbytes", "storage", "tick")

    def __init__(self, numel: int, dtype: torch.dtype, tick: int) -> None:
        self.storage = torch.empty(numel, dtype=dtype).untyped_storage()
        self.nbytes = numel * dtype.itemsize
        self.tick = tick
        # Measured with no tensor alive. Tensors and views raise the C++ use count; the
        # storage's Python object is unique per storage, so ``t.untyped_storage()`` held
        # by a caller raises its Python reference count instead.
        self.idle = _use_count(self.storage._cdata)
        self.idle_py = sys.getrefcount(self.storage)

    def free(self) -> bool:
        return (
            _use_count(self.storage._cdata) == self.idle
            and sys.getrefcount(self.storage) == self.idle_py
            and self.storage.nbytes() >= self.nbytes
        )


class BufferPool:
    """Hands out ``torch.empty_strided``-like tensors, reusing storages nobody holds."""

    def __init__(self, max_bytes: int, min_bytes: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self._slots: dict[tuple[torch.dtype, int], list[_Slot]] = {}
        self._held = 0
        self._tick = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_env(cls) -> BufferPool:
        """A pool sized by ``NORMKIT_BUFFER_POOL_MB`` (default 0: off)."""
        if _use_count is None:  # cannot tell when a buffer is free: never reuse
            return cls(0)
        raw = os.environ.get(ENV_VAR, "0")
        try:
            megabytes = float(raw)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR} must be a number of megabytes, got {raw!r}") from exc
        return cls(int(megabytes * 2**20))

    def empty(self, shape, stride, dtype: torch.dtype) -> Tensor:
        """An uninitialized tensor of ``shape``/``stride`` (dense strides, offset 0)."""
        numel = math.prod(shape)
        nbytes = numel * dtype.itemsize
        if nbytes < self.min_bytes or nbytes > self.max_bytes:
            return torch.empty_strided(shape, stride, dtype=dtype)
        key = (dtype, numel)
        with self._lock:
            self._tick += 1
            slots = self._slots.setdefault(key, [])
            for slot in slots:
                if slot.free():
                    slot.tick = self._tick
                    self.hits += 1
                    return torch.empty(0, dtype=dtype).set_(slot.storage, 0, shape, stride)
            self.misses += 1
            if not self._make_room(nbytes):
                return torch.empty_strided(shape, stride, dtype=dtype)
            slot = _Slot(numel, dtype, self._tick)
            slots.append(slot)
            self._held += nbytes
            return torch.empty(0, dtype=dtype).set_(slot.storage, 0, shape, stride)

    def empty_like(self, x: Tensor) -> Tensor:
        """Like ``torch.empty_like(x)`` for a dense (non-overlapping, gap-free) ``x``."""
        return self.empty(x.shape, x.stride(), x.dtype)

    def _make_room(self, nbytes: int) -> bool:
        if self._held + nbytes <= self.max_bytes:
            return True
        idle = sorted(
            ((slot.tick, key, slot) for key, slots in self._slots.items() for slot in slots
             if slot.free()),
            key=lambda item: item[0],
        )  # fmt: skip
        for _, key, slot in idle:
            self._slots[key].remove(slot)
            self._held -= slot.nbytes
            if self._held + nbytes <= self.max_bytes:
                return True
        return False

    def release(self) -> int:
        """Free every idle buffer; returns the number of bytes released."""
        freed = 0
        with self._lock:
            for key in list(self._slots):
                keep = []
                for slot in self._slots[key]:
                    if slot.free():
                        freed += slot.nbytes
                    else:
                        keep.append(slot)
                self._slots[key] = keep
            self._held -= freed
        return freed

    def stats(self) -> dict[str, int]:
        """Held bytes, buffer count, hits (reuses) and misses (new buffers)."""
        with self._lock:
            count = sum(len(slots) for slots in self._slots.values())
            return {"held_bytes": self._held, "buffers": count, "hits": self.hits,
                    "misses": self.misses}  # fmt: skip
