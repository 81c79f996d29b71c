"""NormMixNet: a small residual CNN (the zoo's own design, not a published model) that puts
into a model every timm norm class no published zoo model uses, so a converter test sees
each of them in context:

* stem: 3x3/2 conv, EvoNorm2dB0 (batch statistics with a running variance);
* stage 1, residual blocks: 3x3 conv, EvoNorm2dS0a (groups of 8 channels), 3x3 conv,
  FilterResponseNormAct2d (ReLU);
* 3x3/2 conv, GroupNorm1Act (ReLU, in-place);
* stage 2, residual blocks: depthwise 3x3, LayerNormAct2d (GELU), 1x1 conv, timm
  GroupNorm (8 groups), GELU;
* head on channels-last tokens: timm RmsNorm, Linear, LayerNormAct (SiLU), mean, fc.
"""

from __future__ import annotations

from torch import Tensor, nn

from tests.zoo.ecosystem.timm_norm import GroupNorm, RmsNorm
from tests.zoo.ecosystem.timm_norm_act import GroupNorm1Act, LayerNormAct, LayerNormAct2d
from tests.zoo.ecosystem.timm_response_norm import (
    EvoNorm2dB0,
    EvoNorm2dS0a,
    FilterResponseNormAct2d,
)

__all__ = ["NormMixNet"]


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


class EvoFrnBlock(nn.Module):
    def __init__(self, chs: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(chs, chs)
        self.norm1 = EvoNorm2dS0a(chs, group_size=8)
        self.conv2 = _conv3x3(chs, chs)
        self.norm2 = FilterResponseNormAct2d(chs)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm2(self.conv2(self.norm1(self.conv1(x))))


class LayerGroupBlock(nn.Module):
    def __init__(self, chs: int) -> None:
        super().__init__()
        self.conv_dw = _conv3x3(chs, chs, groups=chs)
        self.norm1 = LayerNormAct2d(chs, act_layer=nn.GELU)
        self.conv_pw = nn.Conv2d(chs, chs, 1, bias=False)
        self.norm2 = GroupNorm(chs, num_groups=8)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.norm2(self.conv_pw(self.norm1(self.conv_dw(x)))))


class NormMixNet(nn.Module):
    def __init__(
        self, widths: tuple[int, int, int] = (64, 128, 256), depth: int = 2, num_classes: int = 1000
    ) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.stem = nn.Sequential(_conv3x3(3, c0, stride=2), EvoNorm2dB0(c0))
        self.stage1 = nn.Sequential(*[EvoFrnBlock(c0) for _ in range(depth)])
        self.down = nn.Sequential(_conv3x3(c0, c1, stride=2), GroupNorm1Act(c1))
        self.stage2 = nn.Sequential(*[LayerGroupBlock(c1) for _ in range(depth)])
        self.token_norm = RmsNorm(c1)
        self.token_proj = nn.Linear(c1, c2)
        self.token_act = LayerNormAct(c2, act_layer=nn.SiLU)
        self.fc = nn.Linear(c2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        x = self.token_act(self.token_proj(self.token_norm(x.permute(0, 2, 3, 1))))
        return self.fc(x.mean(dim=(1, 2)))
