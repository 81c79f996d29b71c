"""The ``"numba"`` backend: normkit's compiled CPU kernels behind the op contract.

Every op here has the signature and semantics of its namesake in
:mod:`normkit.backends.torch_ops` (the contract): torch tensors in and out, outputs in the
input's dtype and memory layout (channels-last stays channels-last), statistics and
parameter gradients (flat) in the accumulation dtype, ``var`` the biased variance.

This module owns the tensor <-> array boundary: it picks the kernel layout from the
strides, makes inputs contiguous when no kernel layout matches (stride-0 expanded grads,
sliced views), allocates outputs, converts per-channel vectors, and sets the kernel thread
count to ``torch.get_num_threads()`` for the calling thread. Kernels compile per
(op, layout, dtype) on first use (or come from the on-disk cache; see ``normkit warmup``).

Accepted tensors (``supports``): non-empty float32/float64 CPU tensors with the strided
layout. Everything else (float16, bfloat16, CUDA, empty batches) is served by the torch
backend when the backend is chosen automatically, and so is everything in a process forked
from one that already ran the OpenMP kernels (DataLoader workers): GNU OpenMP cannot start
parallel regions after a fork.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from normkit.backends import register, register_backend, torch_ops
from normkit.backends.buffer_pool import BufferPool
from normkit.backends.torch_ops import ACTIVATIONS
from normkit.kernels import ACT_CODES, KERNELS, set_threads, start_threads

_NP = {torch.float32: np.float32, torch.float64: np.float64}
_EMPTY = {dtype: np.empty(0, np_dtype) for dtype, np_dtype in _NP.items()}


#: Large outputs (y, dx) come from here: reused once nothing refers to them (no page faults).
buffers = BufferPool.from_env()

_usable = True  # False in a forked child of a process running GNU OpenMP kernels


def supports(x: Tensor) -> bool:
    """Non-empty float32/float64 strided CPU tensors (any strides)."""
    return _usable and x.dtype in _NP and x.is_cpu and x.layout == torch.strided and x.numel() > 0


def _start_threads() -> str:
    """Start Numba's pool without letting it change torch's thread count (shared OpenMP)."""
    count = torch.get_num_threads()
    layer = start_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return layer


THREADING_LAYER = _start_threads()


def _after_fork_in_child() -> None:
    """GNU OpenMP cannot run parallel regions in a forked child (Numba terminates the child
    on the first launch), e.g. in DataLoader workers: serve the child from the torch backend."""
    global _usable
    if THREADING_LAYER == "omp":
        _usable = False


os.register_at_fork(after_in_child=_after_fork_in_child)


def _threads() -> int:
    """Kernel threads for this call: torch's intra-op thread count, never more."""
    return set_threads(torch.get_num_threads())


_DISPATCH: dict[tuple[str, str, torch.dtype], object] = {}


def _kernel(name: str, layout: str, dtype: torch.dtype):
    """The compiled kernel for ``(name, layout, dtype)``, memoized per process."""
    key = (name, layout, dtype)
    fn = _DISPATCH.get(key)
    if fn is None:
        fn = _DISPATCH[key] = KERNELS[name].get(layout, _NP[dtype])
    return fn


def _act(act: str) -> int:
    code = ACT_CODES.get(act)
    if code is None:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    return code


def _vec(t: Tensor | None, dtype: torch.dtype) -> np.ndarray:
    """A per-channel vector as a contiguous array of ``dtype`` (length 0 for None)."""
    if t is None:
        return _EMPTY[dtype]
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    if t.dim() != 1 or not t.is_contiguous():
        t = t.reshape(-1).contiguous()
    return t.numpy()


# ---------------------------------------------------------------------------------------
# Batch norm layouts: "ncl" = (N, C, L) contiguous; "nlc" = channels fastest, as (N*L, C).


def _like_input(out: Tensor, x: Tensor) -> Tensor:
    """``out`` (computed from a contiguous copy of ``x``) with the strides the torch backend
    gives: ``x``'s own when ``x`` is dense, else contiguous."""
    target = torch.empty_like(x)
    if target.stride() == out.stride():
        return out
    return target.copy_(out)


def _is_nlc(t: Tensor, n: int, c: int, length: int) -> bool:
    """``t (N, C, L)`` is an (N, L, C) buffer seen through a transpose (channels_last)."""
    s0, s1, s2 = t.stride()
    return (c == 1 or s1 == 1) and (length == 1 or s2 == c) and (n == 1 or s0 == c * length)


class _BN:
    """``x (N, C, L)`` resolved to a kernel layout, with matching output allocation.

    ``ncl``: x is contiguous; ``nlc``: x is channels-last (or L == 1), seen by the kernels
    as ``(N*L, C)`` rows. Any other strides are copied to contiguous first (``source``
    keeps the original so outputs get the strides the torch backend would give).
    """

    __slots__ = ("array", "dtype", "layout", "shape", "source", "x")

    def __init__(self, x: Tensor) -> None:
        x = x.detach()
        n, c, length = shape = x.shape
        self.shape, self.dtype, self.source = shape, x.dtype, None
        if length == 1 and _is_nlc(x, n, c, length):
            self.layout, self.x, self.array = "nlc", x, x.numpy().reshape(n, c)
        elif x.is_contiguous():
            self.layout, self.x, self.array = "ncl", x, x.numpy()
        elif _is_nlc(x, n, c, length):
            self.layout, self.x = "nlc", x
            self.array = x.numpy().transpose(0, 2, 1).reshape(n * length, c)
        else:  # no kernel layout: compute on a contiguous copy
            self.layout, self.source = "ncl", x
            self.x = x.contiguous()
            self.array = self.x.numpy()

    def _rows(self, a: np.ndarray) -> np.ndarray:
        n, c, length = self.shape
        return a.transpose(0, 2, 1).reshape(n * length, c)

    def like(self, t: Tensor) -> np.ndarray:
        """``t`` (same shape as x, e.g. a grad) as an array in x's kernel layout."""
        t = t.detach()
        if t.dtype != self.dtype:
            t = t.to(self.dtype)
        if self.layout == "ncl":
            return t.contiguous().numpy()
        if not _is_nlc(t, *self.shape):
            t = torch.empty_like(self.x).copy_(t)
        return self._rows(t.numpy())

    def empty(self) -> tuple[Tensor, np.ndarray]:
        """A new ``(N, C, L)`` tensor with x's strides, and its array for the kernel."""
        out = buffers.empty_like(self.x)
        array = out.numpy()
        return out, (array if self.layout == "ncl" else self._rows(array))

    def result(self, out: Tensor) -> Tensor:
        """An output from :meth:`empty` in the layout the torch backend would give."""
        return out if self.source is None else _like_input(out, self.source)

    def stat(self) -> tuple[Tensor, np.ndarray]:
        out = torch.empty(self.shape[1], dtype=self.dtype)
        return out, out.numpy()


def batch_norm_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """See :func:`normkit.backends.torch_ops.batch_norm_stats`."""
    bn = _BN(x)
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    _kernel("bn_stats", bn.layout, bn.dtype)(bn.array, mean_a, var_a, _threads())
    return mean, var


def batch_norm_elemt(
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """See :func:`normkit.backends.torch_ops.batch_norm_elemt`."""
    bn = _BN(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    _kernel("bn_elemt", bn.layout, dt)(
        bn.array, y_a, _vec(mean, dt), _vec(invstd, dt), _vec(weight, dt), _vec(bias, dt),
        _act(act), float(negative_slope), _threads(),
    )  # fmt: skip
    return bn.result(y)


def batch_norm_backward_reduce(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """See :func:`normkit.backends.torch_ops.batch_norm_backward_reduce`."""
    bn = _BN(x)
    dt = bn.dtype
    sum_dy, sum_dy_a = bn.stat()
    sum_dy_xhat, sum_dy_xhat_a = bn.stat()
    _kernel("bn_backward_reduce", bn.layout, dt)(
        bn.like(grad), bn.array, _vec(mean, dt), _vec(invstd, dt), _vec(weight, dt),
        _vec(bias, dt), _act(act), float(negative_slope), sum_dy_a, sum_dy_xhat_a, _threads(),
    )  # fmt: skip
    return sum_dy, sum_dy_xhat


def batch_norm_backward_elemt(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    sum_dy: Tensor | None,
    sum_dy_xhat: Tensor | None,
    count: int,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """See :func:`normkit.backends.torch_ops.batch_norm_backward_elemt`."""
    bn = _BN(x)
    dt = bn.dtype
    constant = sum_dy is None or sum_dy_xhat is None
    dx, dx_a = bn.empty()
    _kernel("bn_backward_elemt", bn.layout, dt)(
        bn.like(grad), bn.array, dx_a, _vec(mean, dt), _vec(invstd, dt), _vec(weight, dt),
        _vec(bias, dt), _vec(None if constant else sum_dy, dt),
        _vec(None if constant else sum_dy_xhat, dt), int(count), _act(act),
        float(negative_slope), _threads(),
    )  # fmt: skip
    return bn.result(dx)


def batch_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """See :func:`normkit.backends.torch_ops.batch_norm_forward`."""
    bn = _BN(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    mean, mean_a = bn.stat()
    var, var_a = bn.stat()
    _kernel("bn_forward", bn.layout, dt)(
        bn.array, y_a, _vec(weight, dt), _vec(bias, dt), float(eps), 0, 0.0, mean_a, var_a,
        _threads(),
    )  # fmt: skip
    return bn.result(y), mean, var


def batch_norm_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """See :func:`normkit.backends.torch_ops.batch_norm_backward`."""
    bn = _BN(x)
    dt = bn.dtype
    dx, dx_a = bn.empty()
    dweight, dweight_a = bn.stat()
    dbias, dbias_a = bn.stat()
    _kernel("bn_backward", bn.layout, dt)(
        bn.like(grad), bn.array, dx_a, _vec(weight, dt), _vec(mean, dt), _vec(var, dt),
        float(eps), dweight_a, dbias_a, _threads(),
    )  # fmt: skip
    return bn.result(dx), dweight if weight is not None else None, dbias


def batch_norm_eval_forward(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """See :func:`normkit.backends.torch_ops.batch_norm_eval_forward`."""
    bn = _BN(x)
    dt = bn.dtype
    y, y_a = bn.empty()
    _kernel("bn_eval_forward", bn.layout, dt)(
        bn.array, y_a, _vec(running_mean, dt), _vec(running_var, dt), _vec(weight, dt),
        _vec(bias, dt), float(eps), _threads(),
    )  # fmt: skip
    return bn.result(y)


def batch_norm_eval_backward(
    grad: Tensor,
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """See :func:`normkit.backends.torch_ops.batch_norm_eval_backward`."""
    bn = _BN(x)
    dt = bn.dtype
    dx, dx_a = bn.empty()
    dweight, dweight_a = bn.stat()
    dbias, dbias_a = bn.stat()
    _kernel("bn_eval_backward", bn.layout, dt)(
        bn.like(grad), bn.array, dx_a, _vec(running_mean, dt), _vec(running_var, dt),
        _vec(weight, dt), float(eps), dweight_a, dbias_a, _threads(),
    )  # fmt: skip
    return bn.result(dx), dweight if weight is not None else None, dbias


# ---------------------------------------------------------------------------------------
# Group norm (x (N, C, L), stats (N, G)) and row norms (x (R, D), stats (R,)).


def _contiguous(t: Tensor, dtype: torch.dtype) -> np.ndarray:
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    return t.contiguous().numpy()


def _result(out: Tensor, x: Tensor) -> Tensor:
    return out if x.is_contiguous() else _like_input(out, x)


def group_norm_forward(
    x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """See :func:`normkit.backends.torch_ops.group_norm_forward`."""
    dt = x.dtype
    n, c, length = x.shape
    y = buffers.empty((n, c, length), (c * length, length, 1), dt)
    mean = torch.empty((n, groups), dtype=dt)
    var = torch.empty((n, groups), dtype=dt)
    _kernel("gn_forward", "ncl", dt)(
        _contiguous(x, dt), y.numpy(), int(groups), _vec(weight, dt), _vec(bias, dt),
        float(eps), mean.view(-1).numpy(), var.view(-1).numpy(), _threads(),
    )  # fmt: skip
    return _result(y, x), mean, var


def group_norm_backward(
    grad: Tensor,
    x: Tensor,
    groups: int,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """See :func:`normkit.backends.torch_ops.group_norm_backward`."""
    dt = x.dtype
    n, c, length = x.shape
    dx = buffers.empty((n, c, length), (c * length, length, 1), dt)
    dweight = torch.empty(c, dtype=dt)
    dbias = torch.empty(c, dtype=dt)
    _kernel("gn_backward", "ncl", dt)(
        _contiguous(grad, dt), _contiguous(x, dt), dx.numpy(), int(groups), _vec(weight, dt),
        _vec(mean, dt), _vec(var, dt), float(eps), dweight.numpy(), dbias.numpy(), _threads(),
    )  # fmt: skip
    return _result(dx, x), dweight if weight is not None else None, dbias


def row_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, center: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """See :func:`normkit.backends.torch_ops.row_norm_forward`."""
    dt = x.dtype
    y = buffers.empty(x.shape, (x.shape[1], 1), dt)
    mean = torch.empty(x.shape[0], dtype=dt)
    var = torch.empty(x.shape[0], dtype=dt)
    _kernel("row_forward", "rows", dt)(
        _contiguous(x, dt), y.numpy(), _vec(weight, dt), _vec(bias, dt), float(eps),
        bool(center), mean.numpy(), var.numpy(), _threads(),
    )  # fmt: skip
    return _result(y, x), mean, var


def row_norm_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    center: bool,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """See :func:`normkit.backends.torch_ops.row_norm_backward`."""
    dt = x.dtype
    dx = buffers.empty(x.shape, (x.shape[1], 1), dt)
    dweight = torch.empty(x.shape[1], dtype=dt)
    dbias = torch.empty(x.shape[1], dtype=dt)
    _kernel("row_backward", "rows", dt)(
        _contiguous(grad, dt), _contiguous(x, dt), dx.numpy(), _vec(weight, dt),
        _vec(mean, dt), _vec(var, dt), float(eps), bool(center), dweight.numpy(),
        dbias.numpy(), _threads(),
    )  # fmt: skip
    return _result(dx, x), dweight if weight is not None else None, dbias


# ---------------------------------------------------------------------------------------
# Running statistics (C values: one serial kernel call instead of a handful of torch ops).


def _buffer(t: Tensor | None, dtype: torch.dtype) -> bool:
    """A running buffer the kernel can update in place (or None)."""
    return t is None or (t.dtype == dtype and t.is_cpu and t.dim() == 1 and t.is_contiguous())


def running_stats_update(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    factor: float,
    bessel: float,
) -> bool:
    """See :func:`normkit.backends.torch_ops.running_stats_update`."""
    dt = batch_mean.dtype
    if not (
        batch_var.dtype == dt and batch_var.is_cpu and _buffer(running_mean, dt)
        and _buffer(running_var, dt)
    ):  # fmt: skip
        return torch_ops.running_stats_update(
            running_mean, running_var, batch_mean, batch_var, factor, bessel
        )
    rm = _EMPTY[dt] if running_mean is None else running_mean.detach().numpy()
    rv = _EMPTY[dt] if running_var is None else running_var.detach().numpy()
    updated = _kernel("running_update", "vec", dt)(
        rm, rv, _vec(batch_mean, dt), _vec(batch_var, dt), float(factor), float(bessel)
    )
    if updated:  # written through NumPy: tell autograd, as an in-place torch op would
        increment_version(tuple(t for t in (running_mean, running_var) if t is not None))
    return updated


OPS = {
    "batch_norm_stats": batch_norm_stats,
    "batch_norm_elemt": batch_norm_elemt,
    "batch_norm_backward_reduce": batch_norm_backward_reduce,
    "batch_norm_backward_elemt": batch_norm_backward_elemt,
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
    "batch_norm_eval_forward": batch_norm_eval_forward,
    "batch_norm_eval_backward": batch_norm_eval_backward,
    "group_norm_forward": group_norm_forward,
    "group_norm_backward": group_norm_backward,
    "row_norm_forward": row_norm_forward,
    "row_norm_backward": row_norm_backward,
    "running_stats_update": running_stats_update,
}

register_backend("numba", supports)
for _name, _fn in OPS.items():
    register(_name, "numba", _fn)
