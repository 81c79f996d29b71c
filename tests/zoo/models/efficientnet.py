"""EfficientNet (Tan & Le 2019) and MobileNetV3 (Howard et al. 2019) in timm's layout
(``timm.models.efficientnet`` / ``mobilenetv3`` / ``_efficientnet_blocks``, aa4b5850).

Every norm is a norm+act layer (BatchNormAct2d by default) carrying the block's activation
in-place (``bn1.act = nn.SiLU(inplace=True)``), ``apply_act=False`` after projections.
Blocks: ``DepthwiseSeparableConv`` (conv_dw, bn1, aa, se, conv_pw, bn2), ``InvertedResidual``
/ MBConv (conv_pw, bn1, conv_dw, bn2, aa, se, conv_pwl, bn3), ``ConvBnAct`` (conv, bn1, aa),
each with ``drop_path`` on the residual branch; ``aa`` (anti-aliasing) is always
``nn.Identity`` here. Stages are ``blocks.<stage>.<block>``.

Architectures are given as ``BlockDef`` stages instead of timm's string notation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from tests.zoo.ecosystem.timm_layers import DropPath, SqueezeExcite, get_padding, make_divisible
from tests.zoo.ecosystem.timm_norm_act import BatchNormAct2d

__all__ = [
    "EFFICIENTNET_B0",
    "MOBILENETV3_LARGE",
    "BlockDef",
    "ConvBnAct",
    "DepthwiseSeparableConv",
    "EfficientNet",
    "InvertedResidual",
    "MobileNetV3",
    "shrink_arch",
]

Layer = Callable[..., nn.Module]


@dataclass(frozen=True)
class BlockDef:
    """One row of an architecture table: ``repeats`` blocks of ``kind`` ("ds" depthwise-
    separable, "ir" inverted residual, "cn" conv-norm-act); only the first of a stage is
    strided. ``act=None`` takes the model's activation."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    out_chs: int
    exp_ratio: float = 1.0
    se_ratio: float = 0.0
    act: Layer | None = None


#: EfficientNet-B0, Table 1 of the paper (timm's ``_gen_efficientnet`` arch_def).
EFFICIENTNET_B0: list[list[BlockDef]] = [
    [BlockDef("ds", 1, 3, 1, 16, se_ratio=0.25)],
    [BlockDef("ir", 2, 3, 2, 24, 6, 0.25)],
    [BlockDef("ir", 2, 5, 2, 40, 6, 0.25)],
    [BlockDef("ir", 3, 3, 2, 80, 6, 0.25)],
    [BlockDef("ir", 3, 5, 1, 112, 6, 0.25)],
    [BlockDef("ir", 4, 5, 2, 192, 6, 0.25)],
    [BlockDef("ir", 1, 3, 1, 320, 6, 0.25)],
]

#: MobileNetV3-Large, Table 1 of the paper (timm's ``_gen_mobilenet_v3`` large arch_def);
#: ReLU where marked, the model's hard-swish elsewhere.
MOBILENETV3_LARGE: list[list[BlockDef]] = [
    [BlockDef("ds", 1, 3, 1, 16, act=nn.ReLU)],
    [BlockDef("ir", 1, 3, 2, 24, 4, act=nn.ReLU), BlockDef("ir", 1, 3, 1, 24, 3, act=nn.ReLU)],
    [BlockDef("ir", 3, 5, 2, 40, 3, 0.25, act=nn.ReLU)],
    [
        BlockDef("ir", 1, 3, 2, 80, 6),
        BlockDef("ir", 1, 3, 1, 80, 2.5),
        BlockDef("ir", 2, 3, 1, 80, 2.3),
    ],
    [BlockDef("ir", 2, 3, 1, 112, 6, 0.25)],
    [BlockDef("ir", 3, 5, 2, 160, 6, 0.25)],
    [BlockDef("cn", 1, 1, 1, 960)],
]


def shrink_arch(arch: list[list[BlockDef]], max_repeats: int = 2) -> list[list[BlockDef]]:
    """The same stages with at most ``max_repeats`` repeats per row (keeps the residual
    blocks, which need a second block in a stage)."""
    return [[replace(b, repeats=min(b.repeats, max_repeats)) for b in stage] for stage in arch]


def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8) -> int:
    """timm's ``round_channels``: scale by ``multiplier`` and make divisible by ``divisor``."""
    return channels if not multiplier else make_divisible(channels * multiplier, divisor)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False):
    """timm's ``create_conv2d`` with default padding: symmetric ``get_padding``, no bias."""
    return nn.Conv2d(cin, cout, k, stride, get_padding(k, stride), groups=groups, bias=bias)


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate else nn.Identity()


class DepthwiseSeparableConv(nn.Module):
    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        noskip: bool = False,
        pw_act: bool = False,
        act_layer: Layer = nn.ReLU,
        norm_layer: Layer = BatchNormAct2d,
        se_layer: Layer | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_act = partial(norm_layer, act_layer=act_layer)
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        self.has_pw_act = pw_act
        self.conv_s2d = None
        self.bn_s2d = None
        self.conv_dw = _conv(in_chs, in_chs, dw_kernel_size, stride, groups=in_chs)
        self.bn1 = norm_act(in_chs, inplace=True)
        self.aa = nn.Identity()
        self.se = se_layer(in_chs, act_layer=act_layer) if se_layer else nn.Identity()
        self.conv_pw = _conv(in_chs, out_chs, 1)
        self.bn2 = norm_act(out_chs, inplace=True, apply_act=pw_act)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.se(self.aa(self.bn1(self.conv_dw(x))))
        x = self.bn2(self.conv_pw(x))
        return self.drop_path(x) + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand to ``make_divisible(in_chs * exp_ratio)``, depthwise kxk (strided),
    squeeze-excite, 1x1 linear projection; residual when stride 1 and in == out."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        noskip: bool = False,
        exp_ratio: float = 1.0,
        act_layer: Layer = nn.ReLU,
        norm_layer: Layer = BatchNormAct2d,
        se_layer: Layer | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_act = partial(norm_layer, act_layer=act_layer)
        self.has_skip = in_chs == out_chs and stride == 1 and not noskip
        self.conv_s2d = None
        self.bn_s2d = None
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.conv_pw = _conv(in_chs, mid_chs, 1)
        self.bn1 = norm_act(mid_chs, inplace=True)
        self.conv_dw = _conv(mid_chs, mid_chs, dw_kernel_size, stride, groups=mid_chs)
        self.bn2 = norm_act(mid_chs, inplace=True)
        self.aa = nn.Identity()
        self.se = se_layer(mid_chs, act_layer=act_layer) if se_layer else nn.Identity()
        self.conv_pwl = _conv(mid_chs, out_chs, 1)
        self.bn3 = norm_act(out_chs, apply_act=False)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.se(self.aa(self.bn2(self.conv_dw(x))))
        x = self.bn3(self.conv_pwl(x))
        return self.drop_path(x) + shortcut if self.has_skip else x


class ConvBnAct(nn.Module):
    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        skip: bool = False,
        act_layer: Layer = nn.ReLU,
        norm_layer: Layer = BatchNormAct2d,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv = _conv(in_chs, out_chs, kernel_size, stride)
        self.bn1 = norm_layer(out_chs, act_layer=act_layer, inplace=True)
        self.aa = nn.Identity()
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.aa(self.bn1(self.conv(x)))
        return self.drop_path(x) + shortcut if self.has_skip else x


def build_blocks(
    in_chs: int,
    arch: Sequence[Sequence[BlockDef]],
    act_layer: Layer,
    norm_layer: Layer,
    se_layer: Layer,
    se_from_exp: bool,
    round_chs: Callable[[int], int],
    drop_path_rate: float,
) -> tuple[nn.Sequential, int]:
    """timm's EfficientNetBuilder for these block kinds: per-block drop-path rate
    ``drop_path_rate * index / count``; the SE width is relative to the expanded channels,
    so ``se_ratio`` is divided by ``exp_ratio`` unless ``se_from_exp`` (MobileNetV3)."""
    defs = [[b for row in stage for b in [row] * row.repeats] for stage in arch]
    total = sum(len(stage) for stage in defs)
    index = 0
    stages = []
    for stage in defs:
        blocks = []
        for i, d in enumerate(stage):
            out_chs = round_chs(d.out_chs)
            stride = d.stride if i == 0 else 1
            common = {
                "act_layer": d.act or act_layer,
                "norm_layer": norm_layer,
                "drop_path_rate": drop_path_rate * index / total,
            }
            se = None
            if d.se_ratio:
                ratio = d.se_ratio if se_from_exp else d.se_ratio / d.exp_ratio
                se = partial(se_layer, rd_ratio=ratio)
            if d.kind == "ds":
                block = DepthwiseSeparableConv(
                    in_chs, out_chs, d.kernel, stride, se_layer=se, **common
                )
            elif d.kind == "ir":
                block = InvertedResidual(
                    in_chs, out_chs, d.kernel, stride, exp_ratio=d.exp_ratio, se_layer=se, **common
                )
            elif d.kind == "cn":
                block = ConvBnAct(in_chs, out_chs, d.kernel, stride, **common)
            else:
                raise ValueError(f"unknown block kind {d.kind!r} (expected 'ds', 'ir' or 'cn')")
            blocks.append(block)
            in_chs = out_chs
            index += 1
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), in_chs


class EfficientNet(nn.Module):
    """timm's EfficientNet: conv_stem (3x3/2), bn1, blocks, conv_head (1x1), bn2,
    global_pool, dropout, classifier. Channels scale by ``channel_multiplier`` (rounded to
    multiples of 8), as in timm."""

    def __init__(
        self,
        arch: Sequence[Sequence[BlockDef]] = EFFICIENTNET_B0,
        num_classes: int = 1000,
        channel_multiplier: float = 1.0,
        stem_size: int = 32,
        num_features: int = 1280,
        act_layer: Layer = nn.SiLU,
        norm_layer: Layer = BatchNormAct2d,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        round_chs = partial(round_channels, multiplier=channel_multiplier)
        self.drop_rate = drop_rate
        stem_size = round_chs(stem_size)
        self.conv_stem = _conv(3, stem_size, 3, stride=2)
        self.bn1 = norm_layer(stem_size, act_layer=act_layer, inplace=True)
        self.blocks, head_chs = build_blocks(
            stem_size,
            arch,
            act_layer,
            norm_layer,
            SqueezeExcite,
            se_from_exp=False,
            round_chs=round_chs,
            drop_path_rate=drop_path_rate,
        )
        num_features = round_chs(num_features)
        self.conv_head = _conv(head_chs, num_features, 1)
        self.bn2 = norm_layer(num_features, act_layer=act_layer, inplace=True)
        self.global_pool = nn.Sequential(
            OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1))
        )
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.global_pool(self.bn2(self.conv_head(x)))
        x = F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x
        return self.classifier(x)


class MobileNetV3(nn.Module):
    """timm's MobileNetV3: conv_stem (3x3/2, 16), bn1, blocks, then the "efficient head":
    global_pool *before* conv_head (1x1 with bias, no norm: ``norm_head`` is Identity),
    ``act2`` (hard-swish, in-place), flatten, classifier. SE gates are hard-sigmoid with a
    ReLU inside and widths rounded to multiples of 8."""

    def __init__(
        self,
        arch: Sequence[Sequence[BlockDef]] = MOBILENETV3_LARGE,
        num_classes: int = 1000,
        channel_multiplier: float = 1.0,
        num_features: int = 1280,
        act_layer: Layer = nn.Hardswish,
        norm_layer: Layer = BatchNormAct2d,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        round_chs = partial(round_channels, multiplier=channel_multiplier)
        se_layer = partial(
            SqueezeExcite,
            gate_layer="hard_sigmoid",
            force_act_layer=nn.ReLU,
            rd_round_fn=round_channels,
        )
        self.drop_rate = drop_rate
        stem_size = 16 if channel_multiplier < 0.75 else round_chs(16)
        self.conv_stem = _conv(3, stem_size, 3, stride=2)
        self.bn1 = norm_layer(stem_size, act_layer=act_layer, inplace=True)
        self.blocks, head_chs = build_blocks(
            stem_size,
            arch,
            act_layer,
            norm_layer,
            se_layer,
            se_from_exp=True,
            round_chs=round_chs,
            drop_path_rate=drop_path_rate,
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = _conv(head_chs, num_features, 1, bias=True)
        self.norm_head = nn.Identity()
        self.act2 = act_layer(inplace=True)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.act2(self.norm_head(self.conv_head(self.global_pool(x))))
        x = self.flatten(x)
        x = F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x
        return self.classifier(x)
