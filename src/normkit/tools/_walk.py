"""Module-tree helpers shared by every tool: which modules are normalization layers, and one
walker, :func:`replace_modules`, that rebuilds a model with some modules swapped.

The variants of :mod:`normkit.nn` (frozen, renorm, ghost, sync, fused activation) are found
lazily by class name, so the tools work whether or not a given variant exists.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm as _TorchBatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm as _TorchInstanceNorm

from normkit.nn.batchnorm import _BatchNorm as _NkBatchNorm
from normkit.nn.instancenorm import _InstanceNorm as _NkInstanceNorm

# normkit.nn variants, resolved by name on use (they may not exist in every version).
BATCH_VARIANTS = (
    "SyncBatchNorm",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "BatchNormAct1d",
    "BatchNormAct2d",
)
FROZEN_VARIANTS = ("FrozenBatchNorm1d", "FrozenBatchNorm2d", "FrozenBatchNorm3d")


def normkit_class(name: str) -> type[nn.Module]:
    """``normkit.nn.<name>`` (looked up at call time: tools import nn lazily)."""
    return getattr(importlib.import_module("normkit.nn"), name)


def _existing(names: tuple[str, ...]) -> tuple[type, ...]:
    module = importlib.import_module("normkit.nn")
    return tuple(c for c in (getattr(module, n, None) for n in names) if isinstance(c, type))


def is_frozen_batch_norm(module: nn.Module) -> bool:
    """normkit's FrozenBatchNorm (statistics and affine stored as buffers)."""
    return isinstance(module, _existing(FROZEN_VARIANTS))


def is_batch_norm(module: nn.Module) -> bool:
    """A trainable BatchNorm with torch's state (torch's or normkit's, any variant but frozen)."""
    return isinstance(module, (_TorchBatchNorm, _NkBatchNorm, *_existing(BATCH_VARIANTS)))


def has_running_stats(module: nn.Module) -> bool:
    return isinstance(getattr(module, "running_mean", None), Tensor) and isinstance(
        getattr(module, "running_var", None), Tensor
    )


BATCH_FREE = (
    "FilterResponseNormTlu2d",
    "FilterResponseNormAct2d",
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "GlobalResponseNorm",
    "RmsNorm2d",
)

_KINDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("instance", (_TorchInstanceNorm, _NkInstanceNorm)),
    ("layer", (nn.LayerNorm,)),
    ("group", (nn.GroupNorm,)),
    ("rms", (nn.RMSNorm,)),
)


def norm_kind(module: nn.Module) -> str | None:
    """``"batch"``, ``"frozen"``, ``"instance"``, ``"layer"``, ``"group"``, ``"rms"``,
    ``"batch_free"`` (normkit's FRN, EvoNorm, GRN, RmsNorm2d) or None.

    normkit's layers subclass torch's, so ``isinstance`` against torch's classes finds them
    (and the ecosystem's subclasses of torch's norms) too.
    """
    if is_frozen_batch_norm(module):
        return "frozen"
    if is_batch_norm(module):
        return "batch"
    for kind, classes in _KINDS:
        if isinstance(module, classes):
            return kind
    if isinstance(module, _existing(BATCH_FREE)):
        return "batch_free"
    return None


def is_norm(module: nn.Module) -> bool:
    return norm_kind(module) is not None


def iter_norm_layers(
    model: nn.Module, kinds: tuple[str, ...] | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of each normalization layer (each shared instance once)."""
    for name, module in model.named_modules():
        kind = norm_kind(module)
        if kind is not None and (kinds is None or kind in kinds):
            yield name, module


def layer_label(name: str, module: nn.Module) -> str:
    """``'features.1' (BatchNorm2d)``: how the tools name a layer in messages."""
    return f"'{name or '<root>'}' ({type(module).__name__})"


def first_tensor(module: nn.Module) -> Tensor | None:
    for t in module.parameters(recurse=False):
        return t
    for t in module.buffers(recurse=False):
        if t.is_floating_point():
            return t
    return None


def load_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """Load ``old``'s state dict into ``new`` (strictly: the keys are the contract), copy the
    train/eval flag and each parameter's ``requires_grad``; returns ``new``."""
    state = old.state_dict()
    target = new.state_dict()
    for key, value in state.items():
        if key in target and target[key].dtype != value.dtype:
            state[key] = value.to(target[key].dtype)
    new.load_state_dict(state, strict=True)
    old_params = dict(old.named_parameters())
    for name, param in new.named_parameters():
        if name in old_params:
            param.requires_grad_(old_params[name].requires_grad)
    new.train(old.training)
    return new


def factory_kwargs_of(module: nn.Module) -> dict[str, object]:
    """``device``/``dtype`` of a module's own state (for building its replacement)."""
    t = first_tensor(module)
    if t is None:
        return {}
    return {"device": t.device, "dtype": t.dtype}


def replace_modules(
    model: nn.Module,
    predicate: Callable[[str, nn.Module], bool],
    factory: Callable[[str, nn.Module], nn.Module],
) -> nn.Module:
    """Swap every module for which ``predicate(name, module)`` holds with ``factory(name, module)``.

    Recurses over the children (Sequential, ModuleList, ModuleDict and custom modules
    alike) and mutates the containers in place; returns the (possibly replaced) root. A module
    instance shared at several places is replaced once and stays shared. Matching modules are
    not recursed into.
    """
    memo: dict[int, nn.Module] = {}

    def visit(name: str, module: nn.Module) -> nn.Module:
        if id(module) in memo:
            return memo[id(module)]
        if predicate(name, module):
            new = factory(name, module)
            memo[id(module)] = new
            return new
        memo[id(module)] = module
        # ``_modules`` rather than ``named_children()``, which hides a repeated instance.
        for child_name, child in list(module._modules.items()):
            if child is None:
                continue
            new_child = visit(f"{name}.{child_name}" if name else child_name, child)
            if new_child is not child:
                setattr(module, child_name, new_child)
        return module

    return visit("", model)


def module_mode_snapshot(model: nn.Module) -> dict[int, bool]:
    return {id(m): m.training for m in model.modules()}


def restore_modes(model: nn.Module, snapshot: dict[int, bool]) -> None:
    for m in model.modules():
        if id(m) in snapshot:
            m.training = snapshot[id(m)]


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in model.parameters():
        return t.device, t.dtype if t.is_floating_point() else torch.get_default_dtype()
    for t in model.buffers():
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def first_input(args: tuple, kwargs: dict) -> Tensor | None:
    """The tensor a layer normalizes: its first positional argument, else first keyword one."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value
    return None
