"""timm's MLP blocks (``timm.layers.mlp.Mlp`` and ``GlobalResponseNormMlp``, aa4b5850), as
ViT, Swin, PoolFormer and ConvNeXt use them: ``fc1, act (GELU), drop1, norm | grn, fc2,
drop2``, with 1x1 convs instead of Linear for NCHW input (``use_conv``)."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from tests.zoo.ecosystem.timm_response_norm import GlobalResponseNorm

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """``use_grn=False``: Mlp, whose ``norm`` slot is Identity; ``use_grn=True``:
    GlobalResponseNormMlp, a GlobalResponseNorm named ``grn`` in that place (channels-last
    for Linear, NCHW for 1x1 convs)."""

    def __init__(
        self, dim: int, hidden: int, use_conv: bool = False, use_grn: bool = False
    ) -> None:
        super().__init__()
        linear = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.use_grn = use_grn
        self.fc1 = linear(dim, hidden, bias=True)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        if use_grn:
            self.grn = GlobalResponseNorm(hidden, channels_last=not use_conv)
        else:
            self.norm = nn.Identity()
        self.fc2 = linear(hidden, dim, bias=True)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        x = self.grn(x) if self.use_grn else self.norm(x)
        return self.drop2(self.fc2(x))
