"""Which activation modules normkit's fused norm+activation layers compute, by class: the
one table for the layers (FilterResponseNormAct2d) and for ``nk.tools.convert`` (timm's
norm+act layers, the fusion of BatchNorm with the activation after it)."""

from __future__ import annotations

import sys

from torch import nn

#: Activation names (``act=``) -> the torch class computing them.
ACTIVATION_CLASSES: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "hard_swish": nn.Hardswish,
}
_TORCH: dict[type[nn.Module], str] = {
    nn.Identity: "identity",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.SiLU: "silu",
    nn.GELU: "gelu",
    nn.ReLU6: "relu6",
    nn.Hardswish: "hardswish",
}
# timm's own classes computing the same functions, by import path (resolved to the class
# only when timm is imported, which it is whenever a model holds one).
_TIMM: dict[str, str] = {
    "timm.layers.activations.GELU": "gelu",
    "timm.layers.activations.Swish": "silu",
    "timm.layers.activations.HardSwish": "hardswish",
    "timm.layers.activations_me.SwishMe": "silu",
    "timm.layers.activations_me.HardSwishMe": "hardswish",
}


def _timm_class(path: str) -> type | None:
    module_name, _, name = path.rpartition(".")
    module = sys.modules.get(module_name)
    return getattr(module, name, None) if module is not None else None


def fused_activation(module: nn.Module | None) -> tuple[str, float] | None:
    """``(act, negative_slope)`` of the fused activation that computes what ``module``
    computes (``None`` counts as the identity), or ``None`` for a module normkit does not
    fuse (``nn.PReLU``, ``nn.GELU(approximate="tanh")``, ``nn.Tanh``, ...)."""
    if module is None:
        return "identity", 0.01
    kind = type(module)
    act = _TORCH.get(kind)
    if act is None:
        act = next((a for path, a in _TIMM.items() if _timm_class(path) is kind), None)
    if act is None or (act == "gelu" and getattr(module, "approximate", "none") != "none"):
        return None
    return act, float(getattr(module, "negative_slope", 0.01))
