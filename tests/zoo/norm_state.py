"""Which modules of a zoo model are normalization layers, and how to give them non-trivial state.

``norm_classes_in(model)`` is the set of exact norm classes a model contains;
``randomize_norm_state(model)`` fills every norm layer's affine parameters, running
statistics and extra parameters (EvoNorm ``v``, FRN ``tau``) with random valid values, and
the layer scales (ConvNeXt ``gamma`` / ``layer_scale``, PoolFormer ``Scale``) with values of
order one, so that a parity test compares layers away from their identity-like init.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.zoo.ecosystem import timm_norm, timm_norm_act, timm_response_norm, torchvision_ops

__all__ = [
    "BATCH_NORM_CLASSES",
    "NORM_CLASSES",
    "norm_classes_in",
    "norm_layers",
    "randomize_norm_state",
]

_TORCH_NORMS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.RMSNorm,
)

#: Every class counted as a norm layer: torch.nn's and the stand-ins (subclasses of a torch
#: norm, e.g. BatchNormAct2d, are their own entries: sets compare exact types).
NORM_CLASSES: frozenset[type[nn.Module]] = frozenset(
    _TORCH_NORMS
    + tuple(getattr(timm_norm, n) for n in timm_norm.__all__)
    + tuple(
        getattr(timm_norm_act, n)
        for n in timm_norm_act.__all__
        if isinstance(getattr(timm_norm_act, n), type)
    )
    + tuple(getattr(timm_response_norm, n) for n in timm_response_norm.__all__)
    + (torchvision_ops.FrozenBatchNorm2d, torchvision_ops.LayerNorm2d)
)

#: The BatchNorm family: the layers ``normkit.tools.fold`` folds into a preceding conv/linear.
BATCH_NORM_CLASSES: frozenset[type[nn.Module]] = frozenset(
    {
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.SyncBatchNorm,
        timm_norm_act.BatchNormAct2d,
        timm_norm_act.FrozenBatchNormAct2d,
        torchvision_ops.FrozenBatchNorm2d,
    }
)

_AFFINE_NAMES = ("weight", "bias", "v", "tau")
_LAYER_SCALE_NAMES = ("gamma", "layer_scale")


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every norm layer, in registration order."""
    return [(name, m) for name, m in model.named_modules() if type(m) in NORM_CLASSES]


def norm_classes_in(model: nn.Module) -> frozenset[type[nn.Module]]:
    return frozenset(type(m) for _, m in norm_layers(model))


def _fill(t: torch.Tensor, name: str, g: torch.Generator) -> None:
    noise = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
    if name == "running_var":
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype) + 0.5)
    elif name in ("weight", "v"):
        t.copy_(1.0 + 0.3 * noise)
    elif name == "running_mean":
        t.copy_(0.5 * noise)
    else:  # bias, tau
        t.copy_(0.3 * noise)


@torch.no_grad()
def randomize_norm_state(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random but valid state for every norm layer (in place; returns ``model``).

    weight, v ~ 1 + 0.3 N(0, 1); bias, tau ~ 0.3 N(0, 1); running_mean ~ 0.5 N(0, 1);
    running_var ~ U(0.5, 1.5); ``num_batches_tracked`` = 7. Parameters and buffers alike
    (FrozenBatchNorm keeps weight and bias as buffers). Layer scales ~ 1 + 0.3 N(0, 1).
    Deterministic for a given ``seed`` and model structure.
    """
    g = torch.Generator().manual_seed(seed)
    for _, module in norm_layers(model):
        for name in (*_AFFINE_NAMES, "running_mean", "running_var"):
            t = getattr(module, name, None)
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                _fill(t, name, g)
        nbt = getattr(module, "num_batches_tracked", None)
        if isinstance(nbt, torch.Tensor):
            nbt.fill_(7)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if leaf in _LAYER_SCALE_NAMES or (leaf == "scale" and type(owner).__name__ == "Scale"):
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return model
