"""timm's activation factory (``timm.layers.create_act``), as far as the stand-ins use it.

Reproduces ``get_act_layer`` / ``create_act_layer`` of huggingface/pytorch-image-models
aa4b5850: a name or a class resolves to an activation class; ``inplace=None`` constructs it
with its own default, otherwise ``inplace=`` is passed and dropped again for a class that
does not take it (``nn.GELU``, ``nn.Sigmoid``).

Differences: timm maps the names ``"gelu"``, ``"sigmoid"`` and ``"tanh"`` to its own thin
wrapper classes (``timm.layers.activations.GELU`` ...); here they map to torch.nn's, which
compute the same function. The memory-efficient ("_me") variants are not reproduced (timm
only uses them where torch lacks a native op; torch 2.13 has all of them).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["create_act_layer", "get_act_layer"]

_ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "hard_sigmoid": nn.Hardsigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "hard_swish": nn.Hardswish,
    "hardswish": nn.Hardswish,
    "identity": nn.Identity,
}


def get_act_layer(name: str | type[nn.Module] | None = "relu") -> type[nn.Module] | None:
    """A class for ``name``: a class passes through, ``None`` or ``""`` gives ``None``."""
    if name is None:
        return None
    if not isinstance(name, str):
        return name
    if not name:
        return None
    try:
        return _ACT_LAYERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"create_act_layer: unknown activation {name!r}; known: {sorted(_ACT_LAYERS)}"
        ) from None


def create_act_layer(
    name: str | type[nn.Module] | None, inplace: bool | None = None, **kwargs: Any
) -> nn.Module | None:
    """An activation module, ``None`` when ``name`` resolves to nothing."""
    act_layer = get_act_layer(name)
    if act_layer is None:
        return None
    if inplace is None:
        return act_layer(**kwargs)
    try:
        return act_layer(inplace=inplace, **kwargs)
    except TypeError:  # the class has no ``inplace`` argument
        return act_layer(**kwargs)


create_act_layer.__module__ = "timm.layers.create_act"
get_act_layer.__module__ = "timm.layers.create_act"
