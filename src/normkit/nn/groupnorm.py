"""GroupNorm: a drop-in replacement for torch.nn's, computed by normkit."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.group_norm import group_norm
from normkit.nn._base import make_affine, reset_affine


class GroupNorm(nn.Module):
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

    __constants__ = ["num_groups", "num_channels", "eps", "affine"]
    num_groups: int
    num_channels: int
    eps: float
    affine: bool

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
        super().__init__()
        name = type(self).__name__
        v.check_num_features(num_channels, name, what="num_channels")
        v.check_groups(num_channels, num_groups, name)
        v.check_eps(eps, False, name)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        factory_kwargs = {"device": device, "dtype": dtype}
        make_affine(self, (num_channels,), affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        name = f"{type(self).__name__}({self.num_groups}, {self.num_channels})"
        if input.dim() >= 2:
            v.check_channels(input, self.num_channels, name)
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps, name=name)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}, bias={self.bias is not None}"
        )
