"""What ``convert(model, "normkit")`` replaces, by what, and the equivalence each replacement
relies on: a registry of converters keyed by the source **class** (never by its name).

A converter is registered for a class, or for the dotted import path of a class in a library
normkit does not import (``"timm.layers.norm_act.BatchNormAct2d"``): the path is resolved to
the class only when that module is already imported, which it is whenever a model holds an
instance. A module converts when its class has a converter, or when it is a subclass of one
of torch's norm classes whose ``forward`` is torch's own (a subclass with its own forward is
reported instead: normkit cannot know what it computes).

Each converter has ``build(module) -> normkit layer`` (the state dict loads strictly, keys
unchanged), ``check(module) -> reason or None`` (why this instance cannot be converted
exactly, e.g. an activation normkit has no kernel for) and ``why`` (the equivalence). Users
add their own with :func:`register_converter`; a later registration for a class wins.

The converted layer remembers its source as a template on the ``meta`` device (no memory),
so ``convert(model, "torch")`` rebuilds the original class with the trained state.
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from normkit.nn._activations import fused_activation
from normkit.tools._walk import load_state

SOURCE_ATTR = "_normkit_source"


@dataclass(frozen=True)
class Converter:
    """How one source class becomes a normkit layer."""

    source: type | str
    build: Callable[[nn.Module], nn.Module]
    why: str
    check: Callable[[nn.Module], str | None] | None = None

    def reason(self, module: nn.Module) -> str | None:
        return self.check(module) if self.check is not None else None


_REGISTRY: list[Converter] = []


def register_converter(
    source: type | str,
    build: Callable[[nn.Module], nn.Module],
    *,
    why: str,
    check: Callable[[nn.Module], str | None] | None = None,
) -> None:
    """Teach ``convert(model, "normkit")`` a class.

    Args:
        source: the class, or its dotted import path (``"package.module.Class"``) when the
            library is optional.
        build: ``build(module) -> nn.Module``: the replacement, with the module's state
            (use :func:`load_state` to load it strictly and copy the train/eval flag).
        why: one sentence: the equivalence the replacement relies on.
        check: ``check(module) -> str | None``: the reason an instance cannot be converted
            exactly (it is then left as it is and reported), or None.

    Examples::

        >>> import torch, normkit as nk
        >>> class MyNorm(torch.nn.LayerNorm):   # forward overridden: convert reports it
        ...     def forward(self, x):
        ...         return super().forward(x)
        >>> nk.tools.register_converter(
        ...     MyNorm, lambda m: nk.tools.converters.twin(nk.nn.LayerNorm, m),
        ...     why="MyNorm computes LayerNorm")
        >>> type(nk.tools.convert(MyNorm(4), "normkit", quiet=True)).__name__
        'LayerNorm'
    """
    _REGISTRY.insert(0, Converter(source, build, why, check))
    _RESOLVED_FOR.clear()


_RESOLVED: dict[type, Converter] = {}
_RESOLVED_FOR: list[int] = []  # len(sys.modules) the table was built for


def _resolve(source: type | str) -> type | None:
    if isinstance(source, type):
        return source
    module_name, _, class_name = source.rpartition(".")
    module = sys.modules.get(module_name)
    return getattr(module, class_name, None) if module is not None else None


def _table() -> dict[type, Converter]:
    """Converters by class, for the classes importable now (rebuilt when modules change)."""
    if not _RESOLVED_FOR or _RESOLVED_FOR[0] != len(sys.modules):
        _RESOLVED.clear()
        for converter in reversed(_REGISTRY):  # first registered last: later ones win
            cls = _resolve(converter.source)
            if cls is not None:
                _RESOLVED[cls] = converter
        _RESOLVED_FOR[:] = [len(sys.modules)]
    return _RESOLVED


def _is_normkit(cls: type) -> bool:
    return cls.__module__.startswith("normkit.nn")


def find_converter(module: nn.Module) -> Converter | None:
    """The converter for ``module``'s class, or for its torch base class when the class only
    subclasses a torch norm without changing its forward; None otherwise."""
    cls = type(module)
    if _is_normkit(cls):
        return None
    table = _table()
    if cls in table:
        return table[cls]
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("torch.nn") and base in table:
            return table[base] if cls.forward is base.forward else None
    return None


# ---------------------------------------------------------------------------------- builds


def _factory(module: nn.Module) -> dict[str, object]:
    for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


def _bias(module: nn.Module) -> dict[str, bool]:
    return {"bias": False} if getattr(module, "bias", None) is None else {}


def twin(cls: type[nn.Module], old: nn.Module) -> nn.Module:
    """``cls`` (a normkit layer) built with the constructor arguments of ``old``, a layer of
    the torch class ``cls`` subclasses (or a subclass of it), and ``old``'s state."""
    if isinstance(old, nn.modules.batchnorm._NormBase):
        kwargs = {
            "num_features": old.num_features,
            "eps": old.eps,
            "momentum": old.momentum,
            "affine": old.affine,
            "track_running_stats": old.track_running_stats,
        }
        if old.affine:
            kwargs |= _bias(old)
    elif isinstance(old, nn.GroupNorm):
        kwargs = {
            "num_groups": old.num_groups,
            "num_channels": old.num_channels,
            "eps": old.eps,
            "affine": old.affine,
        }
        if old.affine:
            kwargs |= _bias(old)
    elif isinstance(old, nn.LayerNorm):
        kwargs = {
            "normalized_shape": tuple(old.normalized_shape),
            "eps": old.eps,
            "elementwise_affine": old.elementwise_affine,
        }
        if old.elementwise_affine:
            kwargs |= _bias(old)
    elif isinstance(old, nn.RMSNorm):
        kwargs = {
            "normalized_shape": tuple(old.normalized_shape),
            "eps": old.eps,
            "elementwise_affine": old.elementwise_affine,
        }
    else:  # pragma: no cover - guarded by the registry
        raise TypeError(f"no constructor arguments for {type(old).__name__}")
    if isinstance(old, nn.SyncBatchNorm) or type(old).__name__ == "SyncBatchNorm":
        kwargs["process_group"] = getattr(old, "process_group", None)
    return load_state(cls(**kwargs, **_factory(old)), old)


def _act_drop_reason(module: nn.Module) -> str | None:
    drop = getattr(module, "drop", None)
    if drop is not None and type(drop) is not nn.Identity:
        return f"a {type(drop).__name__} between the norm and the activation"
    act = getattr(module, "act", None)
    if fused_activation(act) is None:
        return (
            f"activation {type(act).__name__} is not one normkit fuses "
            "(identity, relu, leaky_relu, silu, exact gelu, relu6, hardswish)"
        )
    return None


def _nk(name: str) -> type[nn.Module]:
    return getattr(importlib.import_module("normkit.nn"), name)


def _timm_batch_norm_act(old: nn.Module) -> nn.Module:
    act, slope = fused_activation(old.act)
    new = _nk("BatchNormAct2d")(
        old.num_features, act=act, eps=old.eps, momentum=old.momentum, affine=old.affine,
        negative_slope=slope, track_running_stats=old.track_running_stats, **_factory(old),
    )  # fmt: skip
    return load_state(new, old)


def _timm_group_norm_act(old: nn.Module) -> nn.Module:
    act, slope = fused_activation(old.act)
    new = _nk("GroupNormAct")(
        old.num_groups, old.num_channels, old.eps, old.affine, act=act, negative_slope=slope,
        **_bias(old) if old.affine else {}, **_factory(old),
    )  # fmt: skip
    return load_state(new, old)


def _timm_layer_norm_act(old: nn.Module) -> nn.Module:
    act, slope = fused_activation(old.act)
    new = _nk("LayerNormAct")(
        tuple(old.normalized_shape), old.eps, old.elementwise_affine, act=act,
        negative_slope=slope, **_bias(old) if old.elementwise_affine else {}, **_factory(old),
    )  # fmt: skip
    return load_state(new, old)


def _layer_norm_act_2d(old: nn.Module) -> nn.Module:
    act, slope = fused_activation(old.act)
    new = _nk("LayerNormAct2d")(
        old.normalized_shape[0], old.eps, old.elementwise_affine, act=act, negative_slope=slope,
        **_bias(old) if old.elementwise_affine else {}, **_factory(old),
    )  # fmt: skip
    return load_state(new, old)


def _layer_norm_2d(old: nn.Module) -> nn.Module:
    new = _nk("LayerNorm2d")(
        old.normalized_shape[0], old.eps, old.elementwise_affine,
        **_bias(old) if old.elementwise_affine else {}, **_factory(old),
    )  # fmt: skip
    return load_state(new, old)


def _channels_only(old: nn.Module) -> str | None:
    if len(old.normalized_shape) != 1:
        return f"normalized_shape {tuple(old.normalized_shape)} is not (C,)"
    return None


def _rms_norm(old: nn.Module) -> nn.Module:
    new = _nk("RMSNorm")(
        tuple(old.normalized_shape), old.eps, old.elementwise_affine, **_factory(old)
    )
    return load_state(new, old)


def _frozen(old: nn.Module) -> nn.Module:
    new = _nk("FrozenBatchNorm2d")(old.weight.shape[0], old.eps, **_factory(old))
    return load_state(new, old)


def _frozen_act(old: nn.Module) -> nn.Module:
    act, slope = fused_activation(old.act)
    new = _nk("FrozenBatchNormAct2d")(
        old.weight.shape[0], old.eps, act=act, negative_slope=slope, **_factory(old)
    )
    return load_state(new, old)


_TWINS = {
    nn.BatchNorm1d: "BatchNorm1d",
    nn.BatchNorm2d: "BatchNorm2d",
    nn.BatchNorm3d: "BatchNorm3d",
    nn.SyncBatchNorm: "SyncBatchNorm",
    nn.InstanceNorm1d: "InstanceNorm1d",
    nn.InstanceNorm2d: "InstanceNorm2d",
    nn.InstanceNorm3d: "InstanceNorm3d",
    nn.LayerNorm: "LayerNorm",
    nn.GroupNorm: "GroupNorm",
    nn.RMSNorm: "RMSNorm",
}


def _twin_builder(name: str) -> Callable[[nn.Module], nn.Module]:
    return lambda old: twin(_nk(name), old)


_TIMM = "timm.layers"
_BUILTIN: list[Converter] = [
    *(
        Converter(cls, _twin_builder(name), f"normkit.nn.{name} computes torch's {name}")
        for cls, name in _TWINS.items()
    ),
    Converter(
        f"{_TIMM}.norm_act.BatchNormAct2d",
        _timm_batch_norm_act,
        "BatchNorm2d's statistics and state, then the activation, fused in one pass",
        _act_drop_reason,
    ),
    Converter(
        f"{_TIMM}.norm_act.GroupNormAct",
        _timm_group_norm_act,
        "GroupNorm, then the activation",
        _act_drop_reason,
    ),
    Converter(
        f"{_TIMM}.norm_act.GroupNorm1Act",
        _timm_group_norm_act,
        "GroupNorm with one group, then the activation",
        _act_drop_reason,
    ),
    Converter(
        f"{_TIMM}.norm_act.LayerNormAct",
        _timm_layer_norm_act,
        "LayerNorm over the trailing dims, then the activation",
        _act_drop_reason,
    ),
    Converter(
        f"{_TIMM}.norm_act.LayerNormAct2d",
        _layer_norm_act_2d,
        "LayerNorm over the channels at each position (permute, layer_norm, permute), then "
        "the activation",
        lambda m: _channels_only(m) or _act_drop_reason(m),
    ),
    Converter(
        f"{_TIMM}.norm_act.FrozenBatchNormAct2d",
        _frozen_act,
        "x * scale + shift from the frozen statistics, then the activation",
        _act_drop_reason,
    ),
    Converter(
        f"{_TIMM}.norm.LayerNorm2d",
        _layer_norm_2d,
        "LayerNorm over the channels at each position (permute, layer_norm, permute)",
        _channels_only,
    ),
    Converter(
        f"{_TIMM}.norm.LayerNorm",
        _twin_builder("LayerNorm"),
        "F.layer_norm over the trailing dims (timm's fast-norm path off)",
        lambda m: "timm's fast-norm path is on" if getattr(m, "_fast_norm", False) else None,
    ),
    Converter(f"{_TIMM}.norm.GroupNorm", _twin_builder("GroupNorm"), "F.group_norm"),
    Converter(f"{_TIMM}.norm.GroupNorm1", _twin_builder("GroupNorm"), "F.group_norm, 1 group"),
    Converter(
        f"{_TIMM}.norm.RmsNorm",
        _rms_norm,
        "F.rms_norm over the trailing dims",
        lambda m: "timm's fast-norm path is on" if getattr(m, "_fast_norm", False) else None,
    ),
    Converter(
        "torchvision.models.convnext.LayerNorm2d",
        _layer_norm_2d,
        "LayerNorm over the channels at each position (permute, layer_norm, permute)",
        _channels_only,
    ),
    Converter(
        "torchvision.ops.misc.FrozenBatchNorm2d",
        _frozen,
        "x * scale + shift with scale = weight / sqrt(running_var + eps)",
    ),
]


def _register_builtins() -> None:
    from normkit.tools.converters_batch_free import CONVERTERS as BATCH_FREE

    for source, build, check, why in BATCH_FREE:
        _REGISTRY.append(Converter(source, build, why, check))
    _REGISTRY.extend(_BUILTIN)


# ------------------------------------------------------------------------- back to torch


def remember_source(new: nn.Module, old: nn.Module) -> nn.Module:
    """Keep ``old``'s class and configuration on ``new``, as a template on the meta device."""
    template = getattr(old, SOURCE_ATTR, None)
    if template is None:
        template = copy.deepcopy(old).to("meta")
    object.__setattr__(new, SOURCE_ATTR, template)
    return new


def source_of(module: nn.Module) -> nn.Module | None:
    return getattr(module, SOURCE_ATTR, None)


def restore(module: nn.Module) -> nn.Module:
    """The layer ``module`` was converted from, rebuilt with ``module``'s current state."""
    template = source_of(module)
    factory = _factory(module)
    old = copy.deepcopy(template).to_empty(device=factory.get("device", "cpu"))
    if "dtype" in factory:
        old = old.to(factory["dtype"])
    return load_state(old, module)


def torch_twin_of(module: nn.Module) -> type[nn.Module] | None:
    """The torch class a normkit layer subclasses when it computes exactly that class."""
    cls = type(module)
    for torch_cls, name in _TWINS.items():
        if cls is _nk(name):
            return torch_cls
    return None


def reason_not_converted(module: nn.Module) -> str | None:
    """Why a normalization-like ``module`` that :func:`find_converter` rejects was left, or
    None when it is not normalization-like (or is normkit's own)."""
    cls = type(module)
    if _is_normkit(cls):
        return None
    converter = find_converter(module)
    if converter is not None:
        return converter.reason(module)
    torch_norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    if isinstance(module, torch_norms):
        base = next(b for b in cls.__mro__ if b.__module__.startswith("torch.nn"))
        return (
            f"a subclass of torch.nn.{base.__name__} with its own forward: normkit cannot know "
            "it computes the same (nk.tools.register_converter teaches it)"
        )
    own_state = any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )
    if not own_state:  # a block holding layers (Conv2dNormActivation), not a layer itself
        return None
    has_stats = isinstance(getattr(module, "running_mean", None), Tensor)
    if has_stats or "Norm" in cls.__name__:
        return (
            "looks like a normalization layer (its name or running statistics); no normkit "
            "converter is registered for it (nk.tools.register_converter adds one)"
        )
    return None


_register_builtins()
