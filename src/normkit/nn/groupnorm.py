"""GroupNorm: torch.nn's class (subclassed), computed by normkit."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normkit.backends.torch_ops import activation_on_output
from normkit.functional import _validate as v
from normkit.functional.group_norm import normalize_groups


def group_norm_forward(layer: GroupNorm, input: Tensor, mask: Tensor | None = None) -> Tensor:
    """The forward of normkit's GroupNorm (one FX node; see :mod:`normkit.nn._base`);
    ``mask``: a padded batch's valid positions."""
    name = layer._layer_name()
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    v.check_channels(input, layer.num_channels, name)
    return normalize_groups(
        input, layer.num_groups, layer.weight, layer.bias, layer.eps, None, name, mask
    )


torch.fx.wrap("group_norm_forward")


class GroupNorm(nn.GroupNorm):
    r"""Group normalization (`Wu & He 2018 <https://arxiv.org/abs/1803.08494>`__), a drop-in
    for :class:`torch.nn.GroupNorm`.

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{ng}]}{\sqrt{\mathrm{Var}[x_{ng}] + \epsilon}}
                 \cdot \gamma_c + \beta_c

    The channels are split into ``num_groups`` groups; each sample's group is normalized
    over its channels and spatial positions (biased variance), then scaled and shifted
    per channel. No running statistics; independent of the batch size, hence its use with
    small batches. ``GroupNorm(1, C)`` is LayerNorm over ``(C, *)`` (per-channel affine);
    ``GroupNorm(C, C)`` is InstanceNorm with affine.

    Padded batches: ``gn(x, mask=m)``, ``m`` bool ``(N, *spatial)`` (True = valid
    position): each sample's group over its channels at its valid positions; padded
    positions output exactly 0 and get 0 gradient (an all-padding sample outputs zeros).

    Args:
        num_groups: number of groups; must divide ``num_channels``.
        num_channels: number of channels ``C``.
        eps: added to the variance. Default: 1e-5
        affine: learnable per-channel ``weight`` (ones) and ``bias`` (zeros). Default: True
        bias: learn the bias (with ``affine``). Default: True

    Shape:
        Input and output: ``(N, C, *)``.

    Examples::

        >>> import torch, normkit as nk
        >>> gn = nk.nn.GroupNorm(2, 6)
        >>> gn(torch.randn(4, 6, 5, 5)).shape
        torch.Size([4, 6, 5, 5])
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        name = type(self).__name__
        v.check_num_features(num_channels, name, what="num_channels")
        v.check_groups(num_channels, num_groups, name)
        v.check_eps(eps, False, name)
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias=bias)

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self.num_groups}, {self.num_channels})"

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return group_norm_forward(self, input, mask)


def group_norm_act_forward(layer: GroupNormAct, input: Tensor) -> Tensor:
    """The forward of GroupNormAct (one FX node)."""
    return activation_on_output(group_norm_forward(layer, input), layer.act, layer.negative_slope)


torch.fx.wrap("group_norm_act_forward")


class GroupNormAct(GroupNorm):
    r"""``act(GroupNorm(x))``: timm's ``GroupNormAct`` (ResNetV2 / BiT), with the same state
    dict (``weight``, ``bias``); the activation is given by name as in
    :class:`normkit.nn.BatchNormAct2d`.

    Args:
        num_groups, num_channels, eps, affine, bias: as :class:`normkit.nn.GroupNorm`.
        act: ``"identity"``, ``"relu"``, ``"leaky_relu"``, ``"silu"``, ``"gelu"``,
            ``"relu6"`` or ``"hardswish"``. Default: ``"relu"``
        negative_slope: leaky_relu's slope. Default: 0.01

    Shape:
        Input and output: ``(N, C, *)``.

    Examples::

        >>> import torch, normkit as nk
        >>> bool((nk.nn.GroupNormAct(2, 4)(torch.randn(2, 4, 3, 3)) >= 0).all())
        True
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        act: str = "relu",
        negative_slope: float = 0.01,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        v.check_activation(act, negative_slope, type(self).__name__)
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias=bias)
        self.act = act
        self.negative_slope = float(negative_slope)

    def forward(self, input: Tensor) -> Tensor:
        return group_norm_act_forward(self, input)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}"
