"""ResNetV2 (He et al. 2016, pre-activation) in timm's layout (``timm.models.resnetv2``,
aa4b5850), with the norm and conv layers timm's variants plug in:

* BiT (Kolesnikov et al. 2020, ``resnetv2_50x1_bit``): GroupNormAct(32 groups, ReLU) and
  weight-standardized StdConv2d (eps 1e-8), "fixed" stem (7x7/2, constant pad 1, 3x3/2 pool);
* ``resnetv2_50d_frn`` / ``resnetv2_50d_evos``: FilterResponseNormTlu2d or EvoNorm2dS0
  (batch-free norm+activation layers), plain convs, "deep" stem (three 3x3), average-pool
  downsampling ("D" variant).

Layout: ``stem``, ``stages.i.blocks.j`` of PreActBottleneck (``norm1`` on the input, shared
by the shortcut ``downsample.conv``; ``conv1/norm2/conv2/norm3/conv3``), final ``norm``, then
``head`` (pool, 1x1 conv ``fc``, flatten). timm zero-initialises every ``conv3``; here the
convs keep torch's default init so that every norm layer matters at initialisation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

from torch import Tensor, nn

from tests.zoo.ecosystem.timm_layers import DropPath, StdConv2d, get_padding, make_divisible
from tests.zoo.ecosystem.timm_norm_act import GroupNormAct

__all__ = ["BIT_CONV", "BIT_NORM", "PreActBottleneck", "ResNetV2", "create_conv2d"]

Layer = Callable[..., nn.Module]


def create_conv2d(
    cin: int, cout: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Conv2d:
    """timm's ``create_conv2d`` with its default padding: a bias-free nn.Conv2d padded by
    ``get_padding``."""
    padding = get_padding(kernel_size, stride, dilation)
    return nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, groups, bias=False)


class DownsampleConv(nn.Module):
    """Shortcut projection of a pre-activation block: a strided 1x1 conv (``norm`` Identity)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, conv_layer: Layer) -> None:
        super().__init__()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=stride)
        self.norm = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class DownsampleAvg(nn.Module):
    """ "D"-variant shortcut: 2x2 average pool (ceil mode, padding not counted), 1x1 conv."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, conv_layer: Layer) -> None:
        super().__init__()
        if stride > 1:
            self.pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        else:
            self.pool = nn.Identity()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=1)
        self.norm = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(self.pool(x)))


class PreActBottleneck(nn.Module):
    """x_pre = norm1(x); out = conv3(norm3(conv2(norm2(conv1(x_pre))))) + shortcut, the
    shortcut being ``downsample(x_pre)`` if projecting, else ``x``; stride on the 3x3."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        conv_layer: Layer,
        norm_layer: Layer,
        proj_layer: Callable[..., nn.Module] | None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        mid_chs = make_divisible(out_chs * 0.25)
        self.downsample = (
            proj_layer(in_chs, out_chs, stride, conv_layer) if proj_layer is not None else None
        )
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 1)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, mid_chs, 3, stride=stride)
        self.norm3 = norm_layer(mid_chs)
        self.conv3 = conv_layer(mid_chs, out_chs, 1)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return self.drop_path(x) + shortcut


class ResNetStage(nn.Module):
    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        depth: int,
        conv_layer: Layer,
        norm_layer: Layer,
        proj_layer: Callable[..., nn.Module],
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential()
        for i in range(depth):
            block = PreActBottleneck(
                in_chs if i == 0 else out_chs,
                out_chs,
                stride if i == 0 else 1,
                conv_layer,
                norm_layer,
                proj_layer if i == 0 else None,
            )
            self.blocks.add_module(str(i), block)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


def _stem(stem_type: str, out_chs: int, conv_layer: Layer, norm_layer: Layer) -> nn.Sequential:
    stem: OrderedDict[str, nn.Module] = OrderedDict()
    if stem_type == "deep":
        mid = out_chs // 2
        stem["conv1"] = conv_layer(3, mid, 3, stride=2)
        stem["norm1"] = norm_layer(mid)
        stem["conv2"] = conv_layer(mid, mid, 3, stride=1)
        stem["norm2"] = norm_layer(mid)
        stem["conv3"] = conv_layer(mid, out_chs, 3, stride=1)
        stem["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    elif stem_type == "fixed":
        stem["conv"] = conv_layer(3, out_chs, 7, stride=2)
        stem["pad"] = nn.ConstantPad2d(1, 0.0)
        stem["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
    else:
        raise ValueError(f"ResNetV2: stem_type must be 'fixed' or 'deep', got {stem_type!r}")
    return nn.Sequential(stem)


#: BiT's layers: weight-standardized convs (eps 1e-8) and 32-group GroupNorm + ReLU.
BIT_CONV = partial(StdConv2d, eps=1e-8)
BIT_NORM = partial(GroupNormAct, num_groups=32)


class ResNetV2(nn.Module):
    """Pre-activation ResNet; the defaults are BiT-M R50x1 (``resnetv2_50x1_bit``)."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        channels: Sequence[int] = (256, 512, 1024, 2048),
        num_classes: int = 1000,
        stem_chs: int = 64,
        stem_type: str = "fixed",
        avg_down: bool = False,
        conv_layer: Layer = BIT_CONV,
        norm_layer: Layer = BIT_NORM,
    ) -> None:
        super().__init__()
        self.stem = _stem(stem_type, stem_chs, conv_layer, norm_layer)
        proj_layer = DownsampleAvg if avg_down else DownsampleConv
        prev = stem_chs
        self.stages = nn.Sequential()
        for i, (depth, chs) in enumerate(zip(layers, channels, strict=True)):
            stage = ResNetStage(
                prev, chs, 1 if i == 0 else 2, depth, conv_layer, norm_layer, proj_layer
            )
            self.stages.add_module(str(i), stage)
            prev = chs
        self.norm = norm_layer(prev)
        self.head = nn.Sequential(
            OrderedDict(
                global_pool=nn.AdaptiveAvgPool2d(1),
                drop=nn.Dropout(0.0),
                fc=nn.Conv2d(prev, num_classes, 1, bias=True),
                flatten=nn.Flatten(1),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.stages(self.stem(x))))
