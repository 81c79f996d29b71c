"""LeViT (Graham et al. 2021) in timm's layout (``timm.models.levit``, aa4b5850, the default
"linear" mode, ``levit_128s``): BatchNorm everywhere, never LayerNorm.

* ``ConvNorm``: conv (no bias) + ``bn`` BatchNorm2d, the stride-16 stem (``stem.conv1..4``
  with hard-swish between);
* ``LinearNorm``: Linear (no bias) + ``bn`` BatchNorm1d applied to the *flattened* tokens,
  ``bn(x.flatten(0, 1)).reshape_as(x)``: (B, N, C) -> (B*N, C) -> back;
* ``NormLinear`` head: BatchNorm1d on the pooled (B, C), then Linear; distilled models
  average ``head`` and ``head_dist``.

Attention adds a learned per-head bias indexed by the relative offset of the two positions
(``attention_biases``, with the non-persistent ``attention_bias_idxs``); ``proj`` and the
MLP's ``ln2`` start with zero BN gain (``bn_weight_init=0``). Stage 0 has
``downsample = nn.Identity()``; later stages an attention-subsample block. timm's eval-mode
cache of the gathered biases is not reproduced (same values).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ConvNorm", "Levit", "LinearNorm", "NormLinear"]


class ConvNorm(nn.Module):
    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.linear = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.linear(x))


class LinearNorm(nn.Module):
    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class NormLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(0.0)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.drop(self.bn(x)))


class Stem16(nn.Sequential):
    def __init__(self, out_chs: int) -> None:
        super().__init__()
        self.stride = 16
        chs = (3, out_chs // 8, out_chs // 4, out_chs // 2, out_chs)
        for i in range(4):
            if i:
                self.add_module(f"act{i}", nn.Hardswish())
            self.add_module(f"conv{i + 1}", ConvNorm(chs[i], chs[i + 1], 3, stride=2, padding=1))


def _grid(resolution: int, step: int = 1) -> Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(0, resolution, step), torch.arange(0, resolution, step), indexing="ij"
    )
    return torch.stack((ys, xs)).flatten(1)


def _bias_index(resolution: int, stride: int = 1) -> Tensor:
    """(queries, keys) index of |dy| * resolution + |dx| for query positions on a grid of
    the given stride and key positions on the full grid."""
    rel = (_grid(resolution, stride)[..., :, None] - _grid(resolution)[..., None, :]).abs()
    return rel[0] * resolution + rel[1]


class Subsample(nn.Module):
    """Tokens (B, R*R, C) -> every ``stride``-th row and column -> (B, (R/s)^2, C)."""

    def __init__(self, stride: int, resolution: int) -> None:
        super().__init__()
        self.stride = stride
        self.resolution = resolution

    def forward(self, x: Tensor) -> Tensor:
        B, _, C = x.shape
        x = x.view(B, self.resolution, self.resolution, C)[:, :: self.stride, :: self.stride]
        return x.reshape(B, -1, C)


class Attention(nn.Module):
    def __init__(
        self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        self.qkv = LinearNorm(dim, self.val_attn_dim + 2 * key_dim * num_heads)
        self.proj = nn.Sequential(
            OrderedDict(act=nn.Hardswish(), ln=LinearNorm(self.val_attn_dim, dim, bn_weight_init=0))
        )
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", _bias_index(resolution), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        q, k, v = (
            self.qkv(x)
            .view(B, N, self.num_heads, -1)
            .split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        )
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3)
        attn = q @ k * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
        return self.proj(x)


class AttentionDownsample(nn.Module):
    """Attention whose queries come from the subsampled grid: (B, R*R, C) -> (B, (R/2)^2, C')."""

    def __init__(
        self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, resolution: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = 4 * key_dim
        self.val_attn_dim = self.val_dim * num_heads
        self.scale = key_dim**-0.5
        self.kv = LinearNorm(in_dim, self.val_attn_dim + key_dim * num_heads)
        self.q = nn.Sequential(
            OrderedDict(down=Subsample(2, resolution), ln=LinearNorm(in_dim, key_dim * num_heads))
        )
        self.proj = nn.Sequential(
            OrderedDict(act=nn.Hardswish(), ln=LinearNorm(self.val_attn_dim, out_dim))
        )
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer(
            "attention_bias_idxs", _bias_index(resolution, stride=2), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        k, v = self.kv(x).view(B, N, self.num_heads, -1).split([self.key_dim, self.val_dim], dim=3)
        k, v = k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3)
        q = self.q(x).view(B, -1, self.num_heads, self.key_dim).permute(0, 2, 1, 3)
        attn = q @ k * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, -1, self.val_attn_dim)
        return self.proj(x)


class LevitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = LinearNorm(dim, hidden)
        self.act = nn.Hardswish()
        self.drop = nn.Dropout(0.0)
        self.ln2 = LinearNorm(hidden, dim, bn_weight_init=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln2(self.drop(self.act(self.ln1(x))))


class LevitDownsample(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, key_dim: int, resolution: int) -> None:
        super().__init__()
        self.attn_downsample = AttentionDownsample(
            in_dim, out_dim, key_dim, in_dim // key_dim, resolution
        )
        self.mlp = LevitMlp(out_dim, 2 * out_dim)
        self.drop_path = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn_downsample(x)
        return x + self.drop_path(self.mlp(x))


class LevitBlock(nn.Module):
    def __init__(
        self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio, resolution)
        self.drop_path1 = nn.Identity()
        self.mlp = LevitMlp(dim, 2 * dim)
        self.drop_path2 = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.mlp(x))


class LevitStage(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        key_dim: int,
        depth: int,
        num_heads: int,
        resolution: int,
        downsample: bool,
    ) -> None:
        super().__init__()
        if downsample:
            self.downsample = LevitDownsample(in_dim, out_dim, key_dim, resolution)
            resolution = (resolution - 1) // 2 + 1
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[LevitBlock(out_dim, key_dim, num_heads, 2.0, resolution) for _ in range(depth)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class Levit(nn.Module):
    """Distilled LeViT (``LevitDistilled``): LeViT-128S at 224 px by default."""

    def __init__(
        self,
        img_size: int = 224,
        embed_dim: Sequence[int] = (128, 256, 384),
        key_dim: int = 16,
        depth: Sequence[int] = (2, 3, 4),
        num_heads: Sequence[int] = (4, 6, 8),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.stem = Stem16(embed_dim[0])
        resolution = img_size // self.stem.stride
        stages = []
        in_dim = embed_dim[0]
        for i, (dim, d, heads) in enumerate(zip(embed_dim, depth, num_heads, strict=True)):
            stages.append(LevitStage(in_dim, dim, key_dim, d, heads, resolution, downsample=i > 0))
            if i > 0:
                resolution = (resolution - 1) // 2 + 1
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.head = NormLinear(embed_dim[-1], num_classes)
        self.head_dist = NormLinear(embed_dim[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.stages(x).mean(dim=1)
        return (self.head(x) + self.head_dist(x)) / 2
