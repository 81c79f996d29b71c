"""normkit's compiled CPU kernels (Numba; NumPy arrays in, preallocated arrays out).

No torch here and no validation: callers (``normkit.backends.numba_backend``) pass
C-contiguous arrays in the layout a kernel names and outputs they allocated. Each entry
compiles per (layout, dtype) on first use and is cached on disk; nothing compiles at import.

``KERNELS`` maps a name to its :class:`~normkit.kernels._jit.Entry`.
"""

from __future__ import annotations

from normkit.kernels import (
    batch_free,
    batch_norm,
    batch_norm_add,
    group_norm,
    masked,
    row_norm,
    running,
)
from normkit.kernels._common import ACT_CODES
from normkit.kernels._jit import Entry, cache_dir, launch_lock, set_threads, start_threads

KERNELS: dict[str, Entry] = {
    "bn_stats": batch_norm.bn_stats,
    "bn_elemt": batch_norm.bn_elemt,
    "bn_backward_reduce": batch_norm.bn_backward_reduce,
    "bn_backward_elemt": batch_norm.bn_backward_elemt,
    "bn_forward": batch_norm.bn_forward,
    "bn_backward": batch_norm.bn_backward,
    "bn_eval_forward": batch_norm.bn_eval_forward,
    "bn_eval_backward": batch_norm.bn_eval_backward,
    "bn_add_forward": batch_norm_add.bn_add_forward,
    "bn_add_eval_forward": batch_norm_add.bn_add_eval_forward,
    "bn_add_relu_backward": batch_norm_add.bn_add_relu_backward,
    "gn_forward": group_norm.gn_forward,
    "gn_backward": group_norm.gn_backward,
    "row_forward": row_norm.row_forward,
    "row_backward": row_norm.row_backward,
    "running_update": running.running_update,
    **batch_free.KERNELS,
    "masked_bn_stats": masked.masked_bn_stats,
    "masked_bn_elemt": masked.masked_bn_elemt,
    "masked_bn_backward_reduce": masked.masked_bn_backward_reduce,
    "masked_bn_backward_elemt": masked.masked_bn_backward_elemt,
    "masked_bn_forward": masked.masked_bn_forward,
    "masked_bn_backward": masked.masked_bn_backward,
    "masked_gn_forward": masked.masked_gn_forward,
    "masked_gn_backward": masked.masked_gn_backward,
}

__all__ = [
    "ACT_CODES",
    "KERNELS",
    "Entry",
    "cache_dir",
    "launch_lock",
    "set_threads",
    "start_threads",
]
