"""ConvNeXt (Liu et al. 2022) and ConvNeXt-V2 (Woo et al. 2023), in two layouts.

torchvision (``torchvision.models.convnext``, 0.28.0): ``features`` = [stem
Conv2dNormActivation(4x4/4, LayerNorm2d), stage, downsample, stage, ...]; a CNBlock is
``block = Sequential(dw 7x7, Permute(0,2,3,1), nn.LayerNorm(eps=1e-6), Linear 4x, GELU,
Linear, Permute(0,3,1,2))`` scaled by ``layer_scale`` (C, 1, 1) with StochasticDepth("row");
``classifier`` = LayerNorm2d on the pooled (N, C, 1, 1), Flatten, Linear.

timm (``timm.models.convnext``, aa4b5850): ``stem`` (conv 4x4/4, norm), ``stages.i`` with
``downsample`` (norm, conv 2x2/2) and ``blocks``; a ConvNeXtBlock is conv_dw, then either
channels-last (permute, timm LayerNorm, Mlp with Linear) or, with ``conv_mlp``, NCHW
(LayerNorm2d / RmsNorm2d, Mlp with 1x1 convs), ``gamma`` layer scale, drop_path; the head
is NormMlpClassifierHead (pool, norm, flatten, fc). ConvNeXt-V2 replaces the layer scale by
a GlobalResponseNorm inside the MLP (``mlp.grn``), channels-last or NCHW like the block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from tests.zoo.ecosystem.timm_layers import DropPath
from tests.zoo.ecosystem.timm_norm import LayerNorm, LayerNorm2d, RmsNorm2d
from tests.zoo.ecosystem.torchvision_ops import (
    Conv2dNormActivation,
    Permute,
    StochasticDepth,
)
from tests.zoo.ecosystem.torchvision_ops import (
    LayerNorm2d as TvLayerNorm2d,
)
from tests.zoo.models._mlp import Mlp

__all__ = ["CNBlock", "ConvNeXt", "ConvNeXtBlock", "ConvNeXtStage", "TimmConvNeXt"]

Layer = Callable[..., nn.Module]


# --- torchvision ---------------------------------------------------------------------


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, x: Tensor) -> Tensor:
        result = self.stochastic_depth(self.layer_scale * self.block(x))
        result += x
        return result


class ConvNeXt(nn.Module):
    """torchvision's ConvNeXt for ``dims`` / ``depths`` (ConvNeXt-T: 96..768, 3-3-9-3;
    torchvision's convnext_tiny uses stochastic depth 0.1, linear in the block index)."""

    def __init__(
        self,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (3, 3, 9, 3),
        stochastic_depth_prob: float = 0.1,
        layer_scale: float = 1e-6,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        norm_layer = partial(TvLayerNorm2d, eps=1e-6)
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3,
                dims[0],
                kernel_size=4,
                stride=4,
                padding=0,
                norm_layer=norm_layer,
                activation_layer=None,
                bias=True,
            )
        ]
        total = sum(depths)
        block_id = 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            stage = []
            for _ in range(depth):
                sd_prob = stochastic_depth_prob * block_id / (total - 1.0)
                stage.append(CNBlock(dim, layer_scale, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(dims):
                layers.append(
                    nn.Sequential(norm_layer(dim), nn.Conv2d(dim, dims[i + 1], 2, stride=2))
                )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            norm_layer(dims[-1]), nn.Flatten(1), nn.Linear(dims[-1], num_classes)
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)))


# --- timm ----------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        norm_layer: Layer,
        conv_mlp: bool,
        use_grn: bool,
        ls_init_value: float | None,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True)
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, 4 * dim, use_conv=conv_mlp, use_grn=use_grn)
        self.gamma = (
            nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value is not None else None
        )
        self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + self.shortcut(shortcut)


class ConvNeXtStage(nn.Module):
    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        depth: int,
        norm_layer: Layer,
        block_norm_layer: Layer,
        conv_mlp: bool,
        use_grn: bool,
        ls_init_value: float | None,
        drop_path_rates: Sequence[float],
    ) -> None:
        super().__init__()
        if in_chs != out_chs or stride > 1:
            self.downsample = nn.Sequential(
                norm_layer(in_chs), nn.Conv2d(in_chs, out_chs, 2, stride=stride, bias=True)
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                ConvNeXtBlock(out_chs, block_norm_layer, conv_mlp, use_grn, ls_init_value, rate)
                for rate in drop_path_rates
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


_TIMM_NORMS = {"layernorm": (LayerNorm2d, LayerNorm), "rmsnorm2d": (RmsNorm2d, None)}


class TimmConvNeXt(nn.Module):
    """timm's ConvNeXt: ``norm="layernorm"`` (LayerNorm2d outside the blocks, LayerNorm in
    channels-last blocks, LayerNorm2d in ``conv_mlp`` blocks) or ``"rmsnorm2d"`` (needs
    ``conv_mlp``). ``use_grn=True, ls_init_value=None`` is ConvNeXt-V2."""

    def __init__(
        self,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (3, 3, 9, 3),
        num_classes: int = 1000,
        norm: str = "layernorm",
        conv_mlp: bool = False,
        use_grn: bool = False,
        ls_init_value: float | None = 1e-6,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_layer, norm_layer_cl = _TIMM_NORMS[norm]
        if norm_layer_cl is None and not conv_mlp:
            raise ValueError(f"TimmConvNeXt: norm={norm!r} needs conv_mlp=True")
        block_norm = norm_layer if conv_mlp else norm_layer_cl
        self.stem = nn.Sequential(
            nn.Conv2d(3, dims[0], 4, stride=4, bias=True), norm_layer(dims[0])
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))
        prev = dims[0]
        stages = []
        for i, (dim, depth, stage_rates) in enumerate(zip(dims, depths, rates, strict=True)):
            stages.append(
                ConvNeXtStage(
                    prev,
                    dim,
                    1 if i == 0 else 2,
                    depth,
                    norm_layer,
                    block_norm,
                    conv_mlp,
                    use_grn,
                    ls_init_value,
                    stage_rates.tolist(),
                )
            )
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.norm_pre = nn.Identity()
        self.head = nn.Sequential(
            OrderedDict(
                global_pool=nn.AdaptiveAvgPool2d(1),
                norm=norm_layer(prev),
                flatten=nn.Flatten(1),
                pre_logits=nn.Identity(),
                drop=nn.Dropout(0.0),
                fc=nn.Linear(prev, num_classes),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm_pre(self.stages(self.stem(x))))
