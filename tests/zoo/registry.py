"""The zoo's registry: ``ZOO[name]`` describes one model in two sizes.

``size="test"``: tiny widths and depths and a 10-class head (a float64 forward + backward
well under a second) that keep every structural pattern of the real model: projection
shortcuts, depthwise / grouped convs, residuals, squeeze-excite, shifted windows, and every
norm class it has.
``size="bench"``: the real architecture at real width and depth (CNN inputs 16 x 3 x 112 x
112; the transformers at their native 224 px: 196 patch tokens for ViT-B/16).

Published parameter counts (bench size), and where they come from:

* ``published_params`` (exact): torchvision 0.28.0's weight metadata ``num_params``, for
  torchvision's models and for the timm models whose architecture torchvision ships
  identically (its efficientnet_b0 weights are ported from timm; ViT-B/16, MobileNetV3-Large,
  Swin-T and ConvNeXt-T have the same parameters in both libraries);
* ``timm_params_m`` (millions, 2 decimals): timm's own ``results/results-imagenet.csv`` or,
  for models without weights, ``results/benchmark-infer-*.csv`` (pytorch-image-models aa4b5850).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from tests.zoo.ecosystem.timm_norm import GroupNorm, GroupNorm1, LayerNorm, LayerNorm2d, RmsNorm
from tests.zoo.ecosystem.timm_norm import RmsNorm2d as TimmRmsNorm2d
from tests.zoo.ecosystem.timm_norm_act import (
    BatchNormAct2d,
    FrozenBatchNormAct2d,
    GroupNorm1Act,
    GroupNormAct,
    LayerNormAct,
    LayerNormAct2d,
    freeze_batch_norm_2d,
)
from tests.zoo.ecosystem.timm_response_norm import (
    EvoNorm2dB0,
    EvoNorm2dS0,
    EvoNorm2dS0a,
    FilterResponseNormAct2d,
    FilterResponseNormTlu2d,
    GlobalResponseNorm,
)
from tests.zoo.ecosystem.torchvision_ops import FrozenBatchNorm2d
from tests.zoo.ecosystem.torchvision_ops import LayerNorm2d as TvLayerNorm2d
from tests.zoo.models.convnext import ConvNeXt, TimmConvNeXt
from tests.zoo.models.densenet import DenseNet
from tests.zoo.models.efficientnet import (
    EFFICIENTNET_B0,
    MOBILENETV3_LARGE,
    EfficientNet,
    MobileNetV3,
    shrink_arch,
)
from tests.zoo.models.levit import Levit
from tests.zoo.models.mobilenetv2 import MobileNetV2
from tests.zoo.models.normmix import NormMixNet
from tests.zoo.models.poolformer import PoolFormer
from tests.zoo.models.resnet import BasicBlock, Bottleneck, ResNet
from tests.zoo.models.resnetv2 import ResNetV2, create_conv2d
from tests.zoo.models.swin import SwinTransformer
from tests.zoo.models.vit import VisionTransformer
from tests.zoo.norm_state import BATCH_NORM_CLASSES

__all__ = ["SIZES", "TEST_CLASSES", "ZOO", "ZooEntry"]

SIZES = ("test", "bench")

#: Classes of the test-size heads (the bench size keeps ImageNet's 1000).
TEST_CLASSES = 10
_CNN_TEST = (2, 3, 64, 64)
_CNN_BENCH = (16, 3, 112, 112)
_VIT_BENCH = (16, 3, 224, 224)


@dataclass(frozen=True)
class ZooEntry:
    """One model: ``build(size)`` gives a fresh instance (float32, train mode)."""

    name: str
    origin: str
    factory: Callable[..., nn.Module]
    kwargs: dict[str, dict[str, Any]]
    input_shapes: dict[str, tuple[int, ...]]
    conv: bool
    norm_classes: frozenset[type[nn.Module]]
    published_params: int | None = None
    timm_params_m: float | None = None
    notes: str = ""
    post: Callable[[nn.Module], nn.Module] | None = field(default=None, repr=False)

    def build(self, size: str = "test") -> nn.Module:
        if size not in SIZES:
            raise ValueError(f"{self.name}: size must be one of {SIZES}, got {size!r}")
        model = self.factory(**self.kwargs[size])
        return self.post(model) if self.post is not None else model

    def input_shape(self, size: str = "test") -> tuple[int, ...]:
        if size not in SIZES:
            raise ValueError(f"{self.name}: size must be one of {SIZES}, got {size!r}")
        return self.input_shapes[size]

    @property
    def foldable(self) -> bool:
        """Has BatchNorm-family layers (what ``normkit.tools.fold`` folds)."""
        return bool(self.norm_classes & BATCH_NORM_CLASSES)


def _entry(
    name: str,
    origin: str,
    factory: Callable[..., nn.Module],
    test: dict[str, Any],
    bench: dict[str, Any],
    norm_classes: set[type[nn.Module]],
    conv: bool = True,
    shapes: tuple[tuple[int, ...], tuple[int, ...]] = (_CNN_TEST, _CNN_BENCH),
    **extra: Any,
) -> ZooEntry:
    return ZooEntry(
        name=name,
        origin=origin,
        factory=factory,
        kwargs={"test": {"num_classes": TEST_CLASSES, **test}, "bench": bench},
        input_shapes={"test": shapes[0], "bench": shapes[1]},
        conv=conv,
        norm_classes=frozenset(norm_classes),
        **extra,
    )


_TINY_CONVNEXT = {"dims": (8, 16, 32, 64), "depths": (1, 1, 2, 1)}
_ATTO = {"dims": (40, 80, 160, 320), "depths": (2, 2, 6, 2)}
_TINY_RESNETV2 = {"layers": (2, 1, 1, 1), "channels": (256, 256, 512, 512)}
_FRN_EVOS = {"stem_type": "deep", "avg_down": True, "conv_layer": create_conv2d}
_TINY_MNV2 = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2], [6, 64, 2, 2], [6, 96, 1, 1]]

_ENTRIES = [
    _entry(
        "resnet18",
        "torchvision.models.resnet18",
        partial(ResNet, BasicBlock),
        {"layers": [1, 1, 1, 1], "width": 8},
        {"layers": [2, 2, 2, 2]},
        {nn.BatchNorm2d},
        published_params=11_689_512,
    ),
    _entry(
        "resnet50",
        "torchvision.models.resnet50",
        partial(ResNet, Bottleneck),
        {"layers": [2, 1, 1, 1], "width": 8},
        {"layers": [3, 4, 6, 3]},
        {nn.BatchNorm2d},
        published_params=25_557_032,
    ),
    _entry(
        "resnet50_frozenbn",
        "torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), as in torchvision's "
        "detection backbones",
        partial(ResNet, Bottleneck, norm_layer=FrozenBatchNorm2d),
        {"layers": [2, 1, 1, 1], "width": 8},
        {"layers": [3, 4, 6, 3]},
        {FrozenBatchNorm2d},
        published_params=25_557_032,
        notes="published_params counts the frozen weight/bias buffers as parameters",
    ),
    _entry(
        "mobilenet_v2",
        "torchvision.models.mobilenet_v2",
        MobileNetV2,
        {"width_mult": 0.25, "inverted_residual_setting": _TINY_MNV2},
        {},
        {nn.BatchNorm2d},
        published_params=3_504_872,
    ),
    _entry(
        "mobilenetv3_large_100",
        "timm mobilenetv3_large_100",
        MobileNetV3,
        {"arch": shrink_arch(MOBILENETV3_LARGE), "channel_multiplier": 0.5, "num_features": 64},
        {},
        {BatchNormAct2d},
        published_params=5_483_032,
        timm_params_m=5.48,
    ),
    _entry(
        "efficientnet_b0",
        "timm efficientnet_b0 (drop_path_rate=0.2, timm's training setting)",
        EfficientNet,
        {"arch": shrink_arch(EFFICIENTNET_B0), "channel_multiplier": 0.25, "drop_path_rate": 0.2},
        {"drop_path_rate": 0.2},
        {BatchNormAct2d},
        published_params=5_288_548,
        timm_params_m=5.29,
    ),
    _entry(
        "efficientnet_b0_gn",
        "timm efficientnet_b0_gn (GroupNormAct, 8 channels per group)",
        partial(EfficientNet, norm_layer=partial(GroupNormAct, group_size=8)),
        {"arch": shrink_arch(EFFICIENTNET_B0), "channel_multiplier": 0.25},
        {},
        {GroupNormAct},
        timm_params_m=5.29,
    ),
    _entry(
        "efficientnet_b0_frozen",
        "timm efficientnet_b0 after timm.layers.freeze_batch_norm_2d",
        EfficientNet,
        {"arch": shrink_arch(EFFICIENTNET_B0), "channel_multiplier": 0.25},
        {},
        {FrozenBatchNormAct2d},
        published_params=5_288_548,
        notes="published_params counts the frozen weight/bias buffers as parameters",
        post=freeze_batch_norm_2d,
    ),
    _entry(
        "convnext_tiny",
        "torchvision.models.convnext_tiny",
        ConvNeXt,
        _TINY_CONVNEXT,
        {},
        {TvLayerNorm2d, nn.LayerNorm},
        published_params=28_589_128,
    ),
    _entry(
        "convnext_tiny_timm",
        "timm convnext_tiny",
        TimmConvNeXt,
        _TINY_CONVNEXT,
        {},
        {LayerNorm2d, LayerNorm},
        published_params=28_589_128,
        timm_params_m=28.59,
    ),
    _entry(
        "convnextv2_tiny",
        "timm convnextv2_tiny (GRN on channels-last tokens)",
        partial(TimmConvNeXt, use_grn=True, ls_init_value=None),
        _TINY_CONVNEXT,
        {},
        {LayerNorm2d, LayerNorm, GlobalResponseNorm},
        timm_params_m=28.64,
    ),
    _entry(
        "convnextv2_atto",
        "timm convnextv2_atto (conv MLP: LayerNorm2d and GRN on NCHW)",
        partial(TimmConvNeXt, use_grn=True, ls_init_value=None, conv_mlp=True),
        _TINY_CONVNEXT,
        _ATTO,
        {LayerNorm2d, GlobalResponseNorm},
        timm_params_m=3.71,
    ),
    _entry(
        "convnext_atto_rms",
        "timm convnext_atto_rms (RmsNorm2d everywhere)",
        partial(TimmConvNeXt, norm="rmsnorm2d", conv_mlp=True),
        _TINY_CONVNEXT,
        _ATTO,
        {TimmRmsNorm2d},
        timm_params_m=3.69,
    ),
    _entry(
        "vit_base_patch16_224",
        "timm vit_base_patch16_224",
        VisionTransformer,
        {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        {},
        {LayerNorm},
        conv=False,
        shapes=((2, 3, 32, 32), _VIT_BENCH),
        published_params=86_567_656,
        timm_params_m=86.57,
    ),
    _entry(
        "swin_tiny_patch4_window7_224",
        "timm swin_tiny_patch4_window7_224",
        SwinTransformer,
        {
            "img_size": 32,
            "embed_dim": 16,
            "depths": (2, 2),
            "num_heads": (1, 2),
            "window_size": 4,
        },
        {},
        {nn.LayerNorm},
        conv=False,
        shapes=((2, 3, 32, 32), _VIT_BENCH),
        published_params=28_288_354,
        timm_params_m=28.29,
    ),
    _entry(
        "levit_128s",
        "timm levit_128s (distilled)",
        Levit,
        {"img_size": 64, "embed_dim": (16, 32), "key_dim": 4, "depth": (1, 1), "num_heads": (2, 4)},
        {},
        {nn.BatchNorm1d, nn.BatchNorm2d},
        conv=False,
        shapes=((2, 3, 64, 64), _VIT_BENCH),
        timm_params_m=7.78,
    ),
    _entry(
        "densenet121",
        "torchvision.models.densenet121",
        DenseNet,
        {"growth_rate": 8, "block_config": (2, 2, 2, 2), "num_init_features": 16},
        {},
        {nn.BatchNorm2d},
        published_params=7_978_856,
    ),
    _entry(
        "resnetv2_50x1_bit",
        "timm resnetv2_50x1_bit (GroupNormAct + StdConv2d)",
        ResNetV2,
        _TINY_RESNETV2,
        {},
        {GroupNormAct},
        timm_params_m=25.55,
    ),
    _entry(
        "resnetv2_50d_frn",
        "timm resnetv2_50d_frn (FilterResponseNormTlu2d)",
        partial(ResNetV2, norm_layer=FilterResponseNormTlu2d, **_FRN_EVOS),
        _TINY_RESNETV2,
        {},
        {FilterResponseNormTlu2d},
        timm_params_m=25.59,
    ),
    _entry(
        "resnetv2_50d_evos",
        "timm resnetv2_50d_evos (EvoNorm2dS0, 32 groups)",
        partial(ResNetV2, norm_layer=EvoNorm2dS0, **_FRN_EVOS),
        _TINY_RESNETV2,
        {},
        {EvoNorm2dS0},
        timm_params_m=25.59,
    ),
    _entry(
        "poolformer_s12",
        "timm poolformer_s12 (GroupNorm1 blocks, LayerNorm2d head)",
        PoolFormer,
        {"depths": (1, 1, 2, 1), "dims": (8, 16, 32, 64)},
        {},
        {GroupNorm1, LayerNorm2d},
        timm_params_m=11.92,
    ),
    _entry(
        "normmix",
        "the zoo's own NormMixNet: the remaining timm norm classes in one CNN",
        NormMixNet,
        {"widths": (16, 32, 64), "depth": 1},
        {},
        {
            EvoNorm2dB0,
            EvoNorm2dS0a,
            FilterResponseNormAct2d,
            GroupNorm1Act,
            LayerNormAct2d,
            GroupNorm,
            RmsNorm,
            LayerNormAct,
        },
    ),
]

ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}
