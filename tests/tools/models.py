"""Real-world model shapes for the tools' tests: a ResNet-style CNN, an MLP, a Transformer
block with LayerNorm, and the classic small Keras CNN. ``ns`` is ``torch.nn`` or
``normkit.nn`` (the norm layers' namespace); everything else is torch.nn."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, + (projected) shortcut, ReLU."""

    def __init__(self, ns, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = ns.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = ns.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), ns.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetish(nn.Module):
    def __init__(self, ns=nn, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), ns.BatchNorm2d(width))
        self.layers = nn.ModuleList(
            [BasicBlock(ns, width, width), BasicBlock(ns, width, 2 * width, stride=2)]
        )
        self.head = nn.ModuleDict(
            {"pool": nn.AdaptiveAvgPool2d(1), "fc": nn.Linear(2 * width, classes)}
        )

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for layer in self.layers:
            x = layer(x)
        return self.head["fc"](torch.flatten(self.head["pool"](x), 1))


def mlp(ns=nn, width: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Linear(20, width),
        ns.BatchNorm1d(width),
        nn.ReLU(),
        nn.Linear(width, width, bias=False),
        ns.BatchNorm1d(width),
        nn.ReLU(),
        nn.Linear(width, 5),
    )


class TransformerBlock(nn.Module):
    """Pre-LN Transformer block: x + attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, ns=nn, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.ln1 = ns.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = ns.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


def keras_cnn(ns=nn) -> nn.Module:
    """Keras's MNIST convnet with BatchNorm after each convolution (input 1x28x28)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        ns.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        ns.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(1600, 10),
    )


def randomize_norm_state(model: nn.Module, steps: int = 3, *inputs_shape) -> nn.Module:
    """Give every norm layer non-trivial gamma/beta and running statistics."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            for name in ("weight", "bias"):
                t = getattr(m, name, None)
                if isinstance(t, torch.Tensor) and t.dim() >= 1 and "Norm" in type(m).__name__:
                    t.copy_(
                        torch.randn(t.shape, generator=g) * 0.3 + (1.0 if name == "weight" else 0.0)
                    )
            rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
            if isinstance(rm, torch.Tensor) and isinstance(rv, torch.Tensor):
                rm.copy_(torch.randn(rm.shape, generator=g) * 0.5)
                rv.copy_(torch.rand(rv.shape, generator=g) + 0.5)
                if isinstance(getattr(m, "num_batches_tracked", None), torch.Tensor):
                    m.num_batches_tracked.fill_(7)
    return model


MODEL_CASES = {
    "resnet": (lambda ns: ResNetish(ns), (4, 3, 16, 16)),
    "mlp": (lambda ns: mlp(ns), (8, 20)),
    "transformer": (lambda ns: TransformerBlock(ns), (2, 5, 16)),
}
