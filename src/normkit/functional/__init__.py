"""Stateless normalization functions with torch.nn.functional's signatures.

Forward and backward are normkit's own (see :mod:`normkit.backends`), wired into autograd
and ``torch.compile``. Each function also takes keyword-only ``backend=`` (force a backend)
and ``name=`` (the name used in error messages); the per-channel and group ones take
``mask=`` (a padded batch's valid positions; see :mod:`normkit.functional.masked`); the
BatchNorm family takes ``single_sample=`` (a training batch with one value per channel; see
:mod:`normkit.functional.single_sample`).
"""

from normkit.functional._running import NonFiniteStatisticsWarning, update_running_stats
from normkit.functional._validate import NormDTypeError, NormInputError
from normkit.functional.batch_free import (
    evo_norm_b0,
    evo_norm_s0,
    filter_response_norm,
    global_response_norm,
    rms_norm2d,
)
from normkit.functional.batch_norm import batch_norm, instance_norm
from normkit.functional.batch_norm_act import batch_norm_act
from normkit.functional.batch_norm_add import batch_norm_add_act
from normkit.functional.batch_renorm import batch_renorm
from normkit.functional.frozen_batch_norm import frozen_batch_norm
from normkit.functional.ghost_batch_norm import ghost_batch_norm
from normkit.functional.group_norm import group_norm
from normkit.functional.layer_norm import layer_norm, layer_norm_2d, rms_norm
from normkit.functional.masked import lengths_to_mask
from normkit.functional.single_sample import SingleSampleWarning
from normkit.functional.sync_batch_norm import sync_batch_norm

__all__ = [
    "NonFiniteStatisticsWarning",
    "NormDTypeError",
    "NormInputError",
    "SingleSampleWarning",
    "batch_norm",
    "batch_norm_act",
    "batch_norm_add_act",
    "batch_renorm",
    "evo_norm_b0",
    "evo_norm_s0",
    "filter_response_norm",
    "frozen_batch_norm",
    "ghost_batch_norm",
    "global_response_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "layer_norm_2d",
    "lengths_to_mask",
    "rms_norm",
    "rms_norm2d",
    "sync_batch_norm",
    "update_running_stats",
]
