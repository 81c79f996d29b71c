"""Stand-ins for ``timm.layers.norm`` (huggingface/pytorch-image-models aa4b5850): GroupNorm,
GroupNorm1, LayerNorm, LayerNorm2d, RmsNorm, RmsNorm2d.

timm's "fast norm" path (``timm.layers.set_fast_norm``, off by default) is not reproduced:
``_fast_norm`` is kept as the attribute timm sets, always False, and forward takes timm's
default path. None of these classes upcasts (that is the separate ``*Fp32`` family).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.zoo.ecosystem._functional import layer_norm_channels_first

__all__ = ["GroupNorm", "GroupNorm1", "LayerNorm", "LayerNorm2d", "RmsNorm", "RmsNorm2d"]

_MODULE = "timm.layers.norm"


class GroupNorm(nn.GroupNorm):
    """timm.layers.norm.GroupNorm (timm aa4b5850): nn.GroupNorm with the channel count first,
    ``GroupNorm(num_channels, num_groups=32, eps=1e-5, affine=True)``, so it can replace a
    BatchNorm constructor. State dict and forward are nn.GroupNorm's."""

    __module__ = _MODULE

    def __init__(
        self,
        num_channels: int,
        num_groups: int = 32,
        eps: float = 1e-5,
        affine: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine, **kwargs)
        self._fast_norm = False

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class GroupNorm1(nn.GroupNorm):
    """timm.layers.norm.GroupNorm1 (timm aa4b5850): nn.GroupNorm with one group (normalizes each
    sample over all of C, H, W; PoolFormer's norm), ``GroupNorm1(num_channels, eps=1e-5,
    affine=True)``."""

    __module__ = _MODULE

    def __init__(self, num_channels: int, **kwargs) -> None:
        super().__init__(1, num_channels, **kwargs)
        self._fast_norm = False

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class LayerNorm(nn.LayerNorm):
    """timm.layers.norm.LayerNorm (timm aa4b5850): nn.LayerNorm with eps 1e-6 by default and
    ``affine`` for ``elementwise_affine``, ``LayerNorm(num_channels, eps=1e-6, affine=True)``.
    Normalizes the last dimension (ViT tokens, ConvNeXt channels-last blocks)."""

    __module__ = _MODULE

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, **kwargs) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, **kwargs)
        self._fast_norm = False

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class LayerNorm2d(nn.LayerNorm):
    """timm.layers.norm.LayerNorm2d (timm aa4b5850): LayerNorm over the channels of (N, C, H, W),
    eps 1e-6.

    y = permute(layer_norm(permute(x, (0, 2, 3, 1)), (C,)), (0, 3, 1, 2))
    """

    __module__ = _MODULE

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, **kwargs) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, **kwargs)
        self._fast_norm = False

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_channels_first(x, self.normalized_shape, self.weight, self.bias, self.eps)


def _rms_norm_init(
    self: nn.Module, channels: int, eps: float = 1e-6, affine: bool = True, device=None, dtype=None
) -> None:
    """Constructor of RmsNorm and RmsNorm2d (timm writes it out in each class; shared here as
    a plain function so that both still derive from nn.Module directly, as timm's do)."""
    nn.Module.__init__(self)
    shape = (channels,) if isinstance(channels, numbers.Integral) else channels
    self.normalized_shape = tuple(shape)
    self.eps = eps
    self.elementwise_affine = affine
    self._fast_norm = False
    if affine:
        self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
    else:
        self.register_parameter("weight", None)
    self.reset_parameters()


def _rms_norm_reset_parameters(self: nn.Module) -> None:
    if self.elementwise_affine:
        nn.init.ones_(self.weight)


class RmsNorm(nn.Module):
    """timm.layers.norm.RmsNorm (timm aa4b5850): RMS norm over the last dimension, gain only, eps
    1e-6.

        y = x / sqrt(mean(x**2, last dims) + eps) * weight      (torch.nn.functional.rms_norm)

    An nn.Module, not an nn.RMSNorm subclass; attributes ``normalized_shape`` (tuple),
    ``eps``, ``elementwise_affine``; state dict ``weight``.
    """

    __module__ = _MODULE
    __constants__ = ["normalized_shape", "eps", "elementwise_affine", "_fast_norm"]

    __init__ = _rms_norm_init
    reset_parameters = _rms_norm_reset_parameters

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class RmsNorm2d(nn.Module):
    """timm.layers.norm.RmsNorm2d (timm aa4b5850): RMS norm over the channels of (N, C, H, W), eps
    1e-6.

        y = x * rsqrt(mean(x**2, dim=1) + eps) * weight[None, :, None, None]

    computed on NCHW directly (no permute), in the input's dtype.
    """

    __module__ = _MODULE
    __constants__ = ["normalized_shape", "eps", "elementwise_affine", "_fast_norm"]

    __init__ = _rms_norm_init
    reset_parameters = _rms_norm_reset_parameters

    def forward(self, x: Tensor) -> Tensor:
        if len(self.normalized_shape) != 1:
            raise ValueError(
                f"{type(self).__name__}: normalized_shape must have one entry (the channels), "
                f"got {self.normalized_shape}"
            )
        x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            x = x * self.weight.reshape(1, -1, 1, 1)
        return x
