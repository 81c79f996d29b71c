"""The tensor <-> array boundary of the numba backend: kernel layouts, zero-copy views and
fresh outputs.

A per-channel op (batch norm) sees ``x (N, C, *)`` in one of two kernel layouts:

* ``"ncl"``: the kernel gets the ``(N, C, L)`` view of a C-contiguous ``x``, ``L = prod(*)``;
* ``"nlc"``: channels fastest (a channels_last 4-D/5-D ``x``, or ``L == 1``); the kernel
  gets the ``(N * L, C)`` rows.

Other strides are copied to contiguous first. Outputs are **fresh tensors of x's own shape**
(never views of a reshaped buffer, so an in-place op on them costs what it costs on torch's
outputs), in the memory format torch's kernel returns for the same input (see
:func:`per_channel_format`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from normkit._shared import per_channel_format
from normkit.backends.buffer_pool import BufferPool

#: Large per-channel outputs come from here when ``NORMKIT_BUFFER_POOL_MB`` turns it on.
BUFFERS = BufferPool.from_env()

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_EMPTY = {dtype: np.empty(0, np_dtype) for dtype, np_dtype in NUMPY_DTYPES.items()}


def vector(t: Tensor | None, dtype: torch.dtype) -> np.ndarray:
    """A per-channel tensor as a contiguous 1-D array of ``dtype`` (length 0 for None)."""
    if t is None:
        return _EMPTY[dtype]
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    if t.dim() != 1 or not t.is_contiguous():
        t = t.reshape(-1).contiguous()
    return t.numpy()


def inverse_std(var: Tensor, eps: float, dtype: torch.dtype) -> np.ndarray:
    """``1 / sqrt(var + eps)`` as a contiguous 1-D array of ``dtype``, computed in ``dtype``
    by NumPy as ``torch.rsqrt(var + eps)`` computes it (without the scalar tensor, and the
    copy of it, that torch's ``var + eps`` makes)."""
    v = vector(var, dtype)
    return 1.0 / np.sqrt(v + v.dtype.type(eps))


class PerChannel:
    """``x (N, C, *)`` resolved to a kernel layout, with arrays for inputs and outputs."""

    __slots__ = ("array", "dtype", "format", "layout", "rows", "x")

    def __init__(self, x: Tensor) -> None:
        x = x.detach()
        self.format = per_channel_format(x)
        if self.format is torch.contiguous_format:
            x = x.contiguous()  # a no-op for contiguous inputs
            self.layout = "ncl" if x.dim() > 2 and math.prod(x.shape[2:]) > 1 else "nlc"
        else:
            self.layout = "nlc"
        self.x, self.dtype = x, x.dtype
        self.rows = x.numel() // x.shape[1] if x.shape[1] else 0
        self.array = self.view(x)

    def view(self, t: Tensor) -> np.ndarray:
        """``t`` (x's shape and memory format) as the kernel's array."""
        a = t.numpy()
        n, c = t.shape[0], t.shape[1]
        if self.layout == "ncl":
            return a.reshape(n, c, -1)
        if self.format is torch.contiguous_format:  # (N, C) or (N, C, 1, ...)
            return a.reshape(n, c)
        return np.moveaxis(a, 1, -1).reshape(self.rows, c)

    def like(self, t: Tensor) -> np.ndarray:
        """``t`` (x's shape, e.g. a gradient, any strides) as an array in x's layout."""
        t = t.detach()
        if t.dtype != self.dtype:
            t = t.to(self.dtype)
        if t.stride() != self.x.stride():
            t = t.contiguous(memory_format=self.format)
        return self.view(t)

    def empty(self) -> tuple[Tensor, np.ndarray]:
        """A fresh tensor of x's shape in torch's output format (x's own, by now), and its
        kernel array."""
        out = BUFFERS.empty_like(self.x) if BUFFERS.max_bytes else torch.empty_like(self.x)
        return out, self.view(out)

    def stat(self) -> tuple[Tensor, np.ndarray]:
        """A fresh ``(C,)`` statistics tensor and its array."""
        out = torch.empty(self.x.shape[1], dtype=self.dtype)
        return out, out.numpy()


def contiguous(t: Tensor, dtype: torch.dtype) -> np.ndarray:
    """``t`` as a C-contiguous array of ``dtype`` (a copy only when needed)."""
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    return t.contiguous().numpy()
