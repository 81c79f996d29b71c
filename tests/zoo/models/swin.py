"""Swin Transformer (Liu et al. 2021) in timm's layout (``timm.models.swin_transformer``,
aa4b5850, ``swin_tiny_patch4_window7_224``): the whole network runs on (N, H, W, C)
channels-last maps and every norm is torch's nn.LayerNorm over C of a 4-D NHWC tensor:
``patch_embed`` (4x4/4 conv, permute, ``norm``), ``layers.i`` with ``downsample``
(PatchMerging: 2x2 neighbours concatenated to 4C, ``norm``, ``reduction`` Linear to 2C) and
``blocks`` (``norm1``, window attention with a relative-position bias table and, in every
second block, cyclically shifted windows with timm's -100 attention mask; ``norm2``, MLP),
final ``norm``, mean over H, W, ``head.fc``. Stochastic depth rises linearly to 0.1.

Not reproduced: padding to a window multiple (the zoo's sizes divide evenly) and timm's
dynamic-size options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tests.zoo.ecosystem.timm_layers import DropPath
from tests.zoo.models._mlp import Mlp

__all__ = ["SwinTransformer", "SwinTransformerBlock", "WindowAttention"]


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w, w, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, C)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """Inverse of ``window_partition``."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def relative_position_index(window: int) -> Tensor:
    """(w*w, w*w) index into the (2w-1)^2 table of relative offsets (dy, dx)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_area = window * window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window), persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.softmax = nn.Softmax(dim=-1)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B_, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        x = self.attn_drop(self.softmax(attn)) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, -1)))


class SwinTransformerBlock(nn.Module):
    """A window shrinks to the map when the map is no larger, and then does not shift."""

    def __init__(
        self, dim: int, resolution: int, num_heads: int, window: int, shift: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.window = min(window, resolution)
        self.shift = self.window // 2 if shift and resolution > window else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.register_buffer("attn_mask", self._mask(resolution), persistent=False)

    def _mask(self, resolution: int) -> Tensor | None:
        """-100 between tokens that come from different regions of the shifted map."""
        if not self.shift:
            return None
        region = torch.zeros(1, resolution, resolution, 1)
        bounds = (
            slice(0, -self.window),
            slice(-self.window, -self.shift),
            slice(-self.shift, None),
        )
        for i, (hs, ws) in enumerate((h, w) for h in bounds for w in bounds):
            region[:, hs, ws, :] = i
        ids = window_partition(region, self.window).view(-1, self.window * self.window)
        diff = ids.unsqueeze(1) - ids.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def _attn(self, x: Tensor) -> Tensor:
        _, H, W, C = x.shape
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window).view(-1, self.window * self.window, C)
        windows = self.attn(windows, mask=self.attn_mask)
        x = window_reverse(windows.view(-1, self.window, self.window, C), self.window, H, W)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(B, -1, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        window: int,
        downsample: bool,
        drop_paths: Sequence[float],
    ) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                SwinTransformerBlock(dim, resolution, num_heads, window, i % 2 == 1, drop_paths[i])
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ClassifierHead(nn.Module):
    """timm's ClassifierHead on NHWC input: mean over H, W, dropout, ``fc``."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(x.mean(dim=(1, 2))))


class SwinTransformer(nn.Module):
    """Swin-T: 224 px, patch 4, dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        drop_path_rate: float = 0.1,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))
        resolution = img_size // patch_size
        layers = []
        for i, (depth, heads, stage_rates) in enumerate(zip(depths, num_heads, rates, strict=True)):
            if i > 0:
                resolution //= 2
            dim = embed_dim * 2**i
            layers.append(
                SwinTransformerStage(
                    dim, resolution, depth, heads, window_size, i > 0, stage_rates.tolist()
                )
            )
        self.layers = nn.Sequential(*layers)
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.layers(self.patch_embed(x))))
