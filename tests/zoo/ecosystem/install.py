"""Register the stand-ins under the original libraries' module names, and take them back.

``install()`` adds, for each of ``timm`` and ``torchvision`` that cannot be found
(``importlib.util.find_spec(name) is None``), empty package modules carrying the stand-ins
under their real dotted names (``timm.layers.norm_act.BatchNormAct2d`` ...), so that
``import timm.layers`` / ``from torchvision.ops.misc import FrozenBatchNorm2d`` and
``importlib.util.find_spec("timm")`` work as with the real packages (for the names the zoo
provides; any other submodule raises ModuleNotFoundError). A real, importable package is
never shadowed. ``uninstall()`` removes exactly the entries ``install()`` added.

Nothing here runs at import time: the process-wide state changes only on these calls.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

from tests.zoo.ecosystem import (
    timm_create_act,
    timm_layers,
    timm_norm,
    timm_norm_act,
    timm_response_norm,
    torchvision_ops,
)

__all__ = ["REAL_MODULES", "install", "installed", "uninstall"]


def _names(module: types.ModuleType, *names: str) -> dict[str, object]:
    return {name: getattr(module, name) for name in names}


_TIMM_NORM = _names(timm_norm, *timm_norm.__all__)
_TIMM_NORM_ACT = _names(timm_norm_act, *timm_norm_act.__all__)
_TIMM_EVO = _names(timm_response_norm, "EvoNorm2dB0", "EvoNorm2dS0", "EvoNorm2dS0a")
_TIMM_FRN = _names(timm_response_norm, "FilterResponseNormTlu2d", "FilterResponseNormAct2d")
_TV_MISC = _names(
    torchvision_ops,
    "FrozenBatchNorm2d",
    "ConvNormActivation",
    "Conv2dNormActivation",
    "SqueezeExcitation",
    "Permute",
)
_TV_STOCHASTIC = _names(torchvision_ops, "StochasticDepth", "stochastic_depth")

#: module name -> the names it holds (package modules also get their submodules as
#: attributes). The parent entries list what the real package re-exports.
REAL_MODULES: dict[str, dict[str, object]] = {
    "timm": {},
    "timm.layers": {
        **_TIMM_NORM,
        **_TIMM_NORM_ACT,
        **_TIMM_EVO,
        **_TIMM_FRN,
        **_names(
            timm_layers, "StdConv2d", "DropPath", "drop_path", "make_divisible", "get_padding"
        ),
        **_names(timm_create_act, "create_act_layer", "get_act_layer"),
    },
    "timm.layers.norm": _TIMM_NORM,
    "timm.layers.norm_act": {
        **_TIMM_NORM_ACT,
        "FrozenBatchNorm2d": torchvision_ops.FrozenBatchNorm2d,  # timm imports torchvision's
    },
    "timm.layers.evo_norm": _TIMM_EVO,
    "timm.layers.filter_response_norm": _TIMM_FRN,
    "timm.layers.grn": _names(timm_response_norm, "GlobalResponseNorm"),
    "timm.layers.std_conv": _names(timm_layers, "StdConv2d"),
    "timm.layers.drop": _names(timm_layers, "DropPath", "drop_path"),
    "timm.layers.create_act": _names(timm_create_act, "create_act_layer", "get_act_layer"),
    "timm.layers.helpers": _names(timm_layers, "make_divisible"),
    "timm.layers.padding": _names(timm_layers, "get_padding"),
    "timm.models": {},
    "timm.models._efficientnet_blocks": _names(timm_layers, "SqueezeExcite"),
    "torchvision": {},
    "torchvision.ops": {**_TV_MISC, **_TV_STOCHASTIC},
    "torchvision.ops.misc": _TV_MISC,
    "torchvision.ops.stochastic_depth": _TV_STOCHASTIC,
    "torchvision.models": {},
    "torchvision.models.convnext": _names(torchvision_ops, "LayerNorm2d"),
}

_PACKAGES = ("timm", "torchvision")
_MARKER = "__normkit_zoo_stand_in__"
_installed: list[str] = []


def _is_package(name: str) -> bool:
    return any(other.startswith(name + ".") for other in REAL_MODULES)


def _make_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"normkit test-zoo stand-in for {name}")
    is_package = _is_package(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=is_package)
    if is_package:
        module.__path__ = []  # a package with no importable files of its own
    setattr(module, _MARKER, True)
    for attr, value in REAL_MODULES[name].items():
        setattr(module, attr, value)
    return module


def install() -> list[str]:
    """Register the stand-in modules of every package not importable here.

    Returns the module names added (empty if both real packages exist, or if already
    installed). Idempotent; pair with ``uninstall()``.
    """
    if _installed:
        return []
    for package in _PACKAGES:
        if package in sys.modules or importlib.util.find_spec(package) is not None:
            continue
        names = [n for n in REAL_MODULES if n == package or n.startswith(package + ".")]
        modules = {name: _make_module(name) for name in names}
        for name, module in modules.items():
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(modules[parent], child, module)
        sys.modules.update(modules)
        _installed.extend(names)
    return list(_installed)


def uninstall() -> None:
    """Remove what ``install()`` added (entries replaced since are left alone)."""
    while _installed:
        name = _installed.pop()
        module = sys.modules.get(name)
        if module is not None and getattr(module, _MARKER, False):
            del sys.modules[name]


def installed() -> list[str]:
    """The module names currently registered by ``install()``."""
    return list(_installed)
