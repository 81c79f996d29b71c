"""Stand-ins for the non-norm timm layers the zoo's models need (huggingface/
pytorch-image-models aa4b5850): ``timm.layers.std_conv.StdConv2d``,
``timm.layers.drop.DropPath`` / ``drop_path``, ``timm.models._efficientnet_blocks.SqueezeExcite``
and the helpers ``timm.layers.helpers.make_divisible`` / ``timm.layers.padding.get_padding``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from tests.zoo.ecosystem.timm_create_act import create_act_layer

__all__ = ["DropPath", "SqueezeExcite", "StdConv2d", "drop_path", "get_padding", "make_divisible"]


def make_divisible(
    v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """The nearest multiple of ``divisor`` to ``v`` (at least ``min_value``, default
    ``divisor``), one ``divisor`` up if rounding lost more than ``1 - round_limit`` of ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's symmetric padding: ``((stride - 1) + dilation * (kernel_size - 1)) // 2``."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


make_divisible.__module__ = "timm.layers.helpers"
get_padding.__module__ = "timm.layers.padding"


class StdConv2d(nn.Conv2d):
    """timm.layers.std_conv.StdConv2d (timm aa4b5850): Conv2d with weight standardization (Qiao et
    al. 2019), used by BiT / ResNetV2:

        w_hat[o] = (w[o] - mean(w[o])) / sqrt(var(w[o], biased) + eps)      per output channel
        y = conv2d(x, w_hat, bias, ...)

    computed with ``F.batch_norm`` in training mode on the weight viewed as (1, O, -1) (a
    BatchNorm call inside a convolution, with no running statistics). eps defaults to 1e-6
    (timm's BiT models pass 1e-8), ``bias=False``, ``padding=None`` -> ``get_padding``.
    """

    __module__ = "timm.layers.std_conv"

    def __init__(
        self,
        in_channel: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        if padding is None:
            if not all(isinstance(v, int) for v in (kernel_size, stride, dilation)):
                raise ValueError("StdConv2d: padding=None needs int kernel_size/stride/dilation")
            padding = get_padding(kernel_size, stride, dilation)
        super().__init__(
            in_channel,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        weight = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            training=True,
            momentum=0.0,
            eps=self.eps,
        ).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def drop_path(
    x: Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True
) -> Tensor:
    """Stochastic depth per sample: zero each sample with probability ``drop_prob`` and
    (``scale_by_keep``) divide the kept ones by ``1 - drop_prob``; identity when not
    training or ``drop_prob == 0``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


drop_path.__module__ = "timm.layers.drop"


class DropPath(nn.Module):
    """timm.layers.drop.DropPath (timm aa4b5850): ``drop_path`` as a module (``drop_prob``,
    ``scale_by_keep``)."""

    __module__ = "timm.layers.drop"

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


class SqueezeExcite(nn.Module):
    """timm.models._efficientnet_blocks.SqueezeExcite (timm aa4b5850) (EfficientNet / MobileNet
    family):

        y = x * gate(conv_expand(act1(conv_reduce(mean(x over H, W)))))

    ``rd_channels = rd_round_fn(in_chs * rd_ratio)`` (``round`` by default) unless given;
    ``act1`` is ``force_act_layer or act_layer`` built in-place; ``gate`` defaults to
    nn.Sigmoid (MobileNetV3 passes ``"hard_sigmoid"``). 1x1 convs with bias.
    """

    __module__ = "timm.models._efficientnet_blocks"

    def __init__(
        self,
        in_chs: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        act_layer: str | Callable[..., nn.Module] = nn.ReLU,
        gate_layer: str | Callable[..., nn.Module] = nn.Sigmoid,
        force_act_layer: str | Callable[..., nn.Module] | None = None,
        rd_round_fn: Callable[[float], int] | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if rd_channels is None:
            rd_channels = (rd_round_fn or round)(in_chs * rd_ratio)
        act_layer = force_act_layer or act_layer
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True, **factory)
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True, **factory)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)
