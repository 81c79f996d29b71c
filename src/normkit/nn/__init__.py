"""Stateful normalization layers: torch.nn's names, signatures, attributes and state_dicts."""

from normkit.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normkit.nn.groupnorm import GroupNorm
from normkit.nn.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from normkit.nn.layernorm import LayerNorm, RMSNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "RMSNorm",
]
