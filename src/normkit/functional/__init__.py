"""Stateless normalization functions with torch.nn.functional's signatures.

Forward and backward are normkit's own (see :mod:`normkit.backends`), wired into autograd
and ``torch.compile``. Each function also takes keyword-only ``backend=`` (force a backend)
and ``name=`` (the name used in error messages).
"""

from normkit.functional._running import NonFiniteStatisticsWarning, update_running_stats
from normkit.functional._validate import NormDTypeError, NormInputError
from normkit.functional.batch_norm import batch_norm, instance_norm
from normkit.functional.group_norm import group_norm
from normkit.functional.layer_norm import layer_norm, rms_norm

__all__ = [
    "NonFiniteStatisticsWarning",
    "NormDTypeError",
    "NormInputError",
    "batch_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "rms_norm",
    "update_running_stats",
]
