"""Stateful normalization layers: torch.nn's names, signatures, attributes and state_dicts."""

from normkit.nn.batch_free import (
    EvoNorm2dB0,
    EvoNorm2dS0,
    EvoNorm2dS0a,
    FilterResponseNormAct2d,
    FilterResponseNormTlu2d,
    GlobalResponseNorm,
    RmsNorm2d,
)
from normkit.nn.batch_renorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d
from normkit.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normkit.nn.batchnorm_act import BatchNormAct1d, BatchNormAct2d, FusedActivation
from normkit.nn.frozen import (
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    FrozenBatchNorm3d,
    FrozenBatchNormAct2d,
)
from normkit.nn.ghost import GhostBatchNorm1d, GhostBatchNorm2d
from normkit.nn.groupnorm import GroupNorm, GroupNormAct
from normkit.nn.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from normkit.nn.layernorm import LayerNorm, LayerNorm2d, LayerNormAct, LayerNormAct2d, RMSNorm
from normkit.nn.lazy import (
    LazyBatchNorm1d,
    LazyBatchNorm2d,
    LazyBatchNorm3d,
    LazyInstanceNorm1d,
    LazyInstanceNorm2d,
    LazyInstanceNorm3d,
)
from normkit.nn.sync_batchnorm import SyncBatchNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormAct1d",
    "BatchNormAct2d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "FilterResponseNormAct2d",
    "FilterResponseNormTlu2d",
    "FrozenBatchNorm1d",
    "FrozenBatchNorm2d",
    "FrozenBatchNorm3d",
    "FrozenBatchNormAct2d",
    "FusedActivation",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GlobalResponseNorm",
    "GroupNorm",
    "GroupNormAct",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LayerNorm2d",
    "LayerNormAct",
    "LayerNormAct2d",
    "LazyBatchNorm1d",
    "LazyBatchNorm2d",
    "LazyBatchNorm3d",
    "LazyInstanceNorm1d",
    "LazyInstanceNorm2d",
    "LazyInstanceNorm3d",
    "RMSNorm",
    "RmsNorm2d",
    "SyncBatchNorm",
]
