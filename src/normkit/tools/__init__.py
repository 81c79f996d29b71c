"""Tools around normalization layers, for torch.nn's layers and normkit.nn's alike.

    import normkit as nk
    model = nk.tools.convert(model, "normkit")          # swap norm layers, keep the state
    fast = nk.tools.fold(model.eval())                   # BN merged into Conv/Linear
    nk.tools.recalibrate(model, loader)                  # exact population statistics
    nk.tools.freeze(model); nk.tools.unfreeze(model)     # fine-tuning: BN stats/affine fixed
    print(nk.tools.summary(model, (1, 3, 32, 32)))       # Keras-style table + norm health
    print(nk.tools.doctor(model, batch))                 # classic mistakes, with fixes
    model = nk.tools.fuse_model(model)                   # BN+act, BN+add+ReLU (convert does it)
    with nk.tools.monitor(model) as mon: ...             # per-layer input statistics
    nk.tools.set_single_sample_policy(model, "running_stats")   # batches of one value/channel

Tools depend on :mod:`normkit.nn` and :mod:`normkit.functional` only.
"""

from normkit.tools import converters
from normkit.tools._walk import (
    is_batch_norm,
    is_norm,
    iter_norm_layers,
    norm_kind,
    replace_modules,
)
from normkit.tools.convert import (
    TARGETS,
    ConversionError,
    ConversionWarning,
    ConvertReport,
    convert,
    convert_targets,
    default_num_groups,
)
from normkit.tools.converters import register_converter
from normkit.tools.doctor import CHECKS, Finding, Findings, doctor
from normkit.tools.fold import (
    FoldError,
    FoldReport,
    fold,
    fold_bn_weights,
    fold_conv_bn,
    fold_linear_bn,
)
from normkit.tools.freeze import freeze, frozen, is_frozen, unfreeze
from normkit.tools.fuse_blocks import FusionWarning
from normkit.tools.fusion import FusionError, FusionReport, fuse_model
from normkit.tools.keras import KerasConversionError, from_keras, to_keras, to_keras_config
from normkit.tools.monitor import Monitor, Record, monitor
from normkit.tools.recalibrate import (
    EMA,
    STRATEGIES,
    CumulativeMean,
    Estimator,
    NothingToRecalibrateWarning,
    PopulationVariance,
    RecalibrationReport,
    recalibrate,
    recalibration,
)
from normkit.tools.single_sample import SingleSamplePolicyError, set_single_sample_policy
from normkit.tools.summary import LayerRow, NormRow, Summary, SummaryError, count_params, summary

__all__ = [
    "CHECKS",
    "EMA",
    "STRATEGIES",
    "TARGETS",
    "ConversionError",
    "ConversionWarning",
    "ConvertReport",
    "CumulativeMean",
    "Estimator",
    "Finding",
    "Findings",
    "FoldError",
    "FoldReport",
    "FusionError",
    "FusionReport",
    "FusionWarning",
    "KerasConversionError",
    "LayerRow",
    "Monitor",
    "NormRow",
    "NothingToRecalibrateWarning",
    "PopulationVariance",
    "RecalibrationReport",
    "Record",
    "SingleSamplePolicyError",
    "Summary",
    "SummaryError",
    "convert",
    "convert_targets",
    "converters",
    "count_params",
    "default_num_groups",
    "doctor",
    "fold",
    "fold_bn_weights",
    "fold_conv_bn",
    "fold_linear_bn",
    "freeze",
    "from_keras",
    "frozen",
    "fuse_model",
    "is_batch_norm",
    "is_frozen",
    "is_norm",
    "iter_norm_layers",
    "monitor",
    "norm_kind",
    "recalibrate",
    "recalibration",
    "register_converter",
    "replace_modules",
    "set_single_sample_policy",
    "summary",
    "to_keras",
    "to_keras_config",
    "unfreeze",
]
