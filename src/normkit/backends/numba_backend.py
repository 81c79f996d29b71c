"""The ``"numba"`` backend: normkit's compiled CPU kernels behind the op contract of
:mod:`normkit.backends.torch_backend` (same functions, same signatures, same semantics).

It takes non-empty float32/float64 CPU tensors with the strided layout (any strides: those
without a kernel layout are copied to contiguous first), except in a process forked from one
that already ran the OpenMP kernels (DataLoader workers), where GNU OpenMP cannot start
parallel regions. Kernels compile per (op, layout, dtype) on first use, or load from the
on-disk cache (see ``normkit warmup``).
"""

from __future__ import annotations

import torch

from normkit.backends import _numba_runtime as rt
from normkit.backends import (
    numba_batch_free,
    numba_batch_norm,
    numba_channel_norm,
    numba_group_norm,
    numba_masked,
    numba_row_norm,
    register_backend,
)
from normkit.backends._arrays import NUMPY_DTYPES


def supports(dtype: torch.dtype, device_type: str) -> bool:
    """float32/float64 CPU tensors (in a process whose OpenMP runtime works)."""
    return rt.usable() and dtype in NUMPY_DTYPES and device_type == "cpu"


OPS = {
    "batch_norm_train": numba_batch_norm.batch_norm_train,
    "batch_norm_eval": numba_batch_norm.batch_norm_eval,
    "instance_norm_train": numba_group_norm.instance_norm_train,
    "group_norm": numba_group_norm.group_norm,
    "layer_norm": numba_row_norm.layer_norm,
    "rms_norm": numba_row_norm.rms_norm,
    "layer_norm_2d": numba_channel_norm.layer_norm_2d,
    "bn_stats": numba_batch_norm.bn_stats,
    "bn_elemt": numba_batch_norm.bn_elemt,
    "bn_backward_reduce": numba_batch_norm.bn_backward_reduce,
    "bn_backward_elemt": numba_batch_norm.bn_backward_elemt,
    **numba_batch_free.OPS,
    **numba_masked.OPS,
}

register_backend("numba", supports, OPS)
