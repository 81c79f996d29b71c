"""PoolFormer (Yu et al. 2022, MetaFormer with an average-pool token mixer) in timm's layout
(``timm.models.metaformer``, aa4b5850, ``poolformer_s12``): ``stem`` (7x7/4 conv, ``norm``
Identity), ``stages.i`` with ``downsample`` (3x3/2 conv; Identity in stage 0) and
``blocks``; a block is ``x + layer_scale1(pool(norm1(x)) - norm1(x))``, then
``x + layer_scale2(mlp(norm2(x)))`` with 1x1-conv MLPs, every block norm timm's GroupNorm1
(one group: each sample over all of C, H, W). The head pools first and normalizes the
(N, C, 1, 1) result with timm's LayerNorm2d, then flatten and ``fc``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tests.zoo.ecosystem.timm_norm import GroupNorm1, LayerNorm2d
from tests.zoo.models._mlp import Mlp

__all__ = ["MetaFormerBlock", "PoolFormer"]


class Scale(nn.Module):
    """Per-channel layer scale on NCHW: ``x * scale.view(C, 1, 1)``."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.shape = (dim, 1, 1)
        self.scale = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.view(self.shape)


class Pooling(nn.Module):
    """PoolFormer's token mixer: avg_pool3x3(x) - x (padding not counted)."""

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(
            pool_size, stride=1, padding=pool_size // 2, count_include_pad=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x) - x


class MetaFormerBlock(nn.Module):
    def __init__(self, dim: int, layer_scale_init_value: float) -> None:
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.token_mixer = Pooling()
        self.drop_path1 = nn.Identity()
        self.layer_scale1 = Scale(dim, layer_scale_init_value)
        self.res_scale1 = nn.Identity()
        self.norm2 = GroupNorm1(dim)
        self.mlp = Mlp(dim, 4 * dim, use_conv=True)
        self.drop_path2 = nn.Identity()
        self.layer_scale2 = Scale(dim, layer_scale_init_value)
        self.res_scale2 = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


class MetaFormerStage(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, depth: int, layer_scale_init_value: float):
        super().__init__()
        if in_chs == out_chs:
            self.downsample = nn.Identity()
        else:
            self.downsample = nn.Sequential(
                OrderedDict(
                    norm=nn.Identity(),
                    conv=nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1),
                )
            )
        self.blocks = nn.Sequential(
            *[MetaFormerBlock(out_chs, layer_scale_init_value) for _ in range(depth)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class PoolFormer(nn.Module):
    """PoolFormer-S12: depths (2, 2, 6, 2), dims (64, 128, 320, 512), layer scale 1e-5."""

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (64, 128, 320, 512),
        layer_scale_init_value: float = 1e-5,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, dims[0], 7, stride=4, padding=2),
                norm=nn.Identity(),
            )
        )
        prev = dims[0]
        stages = []
        for depth, dim in zip(depths, dims, strict=True):
            stages.append(MetaFormerStage(prev, dim, depth, layer_scale_init_value))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            OrderedDict(
                global_pool=nn.AdaptiveAvgPool2d(1),
                norm=LayerNorm2d(prev),
                flatten=nn.Flatten(1),
                drop=nn.Identity(),
                fc=nn.Linear(prev, num_classes),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))
