"""Small models for the lab, built from normkit.nn normalization layers.

Normalization kinds (``make_norm``): ``bn`` BatchNorm, ``gn`` GroupNorm, ``ln`` LayerNorm
over ``(C, *spatial)`` (the Group Norm paper's LN), ``in`` InstanceNorm (affine),
``none``, ``brn`` BatchRenorm (warm-up over a quarter of the steps) and ``gbn``
GhostBatchNorm (virtual batch of 16).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

import normkit.nn as nknn
from normkit.lab.errors import LabError
from normkit.lab.i18n import tr

NORM_KINDS = ("bn", "gn", "ln", "in", "none", "brn", "gbn")
# English names (identifiers in results); norm_label() gives the report's language.
NORM_LABELS = {kind: tr(f"norm.{kind}", lang="en") for kind in NORM_KINDS}
GROUPS = 8  # GroupNorm groups (channels per group = C / 8)
GHOST_BATCH = 16  # GhostBatchNorm virtual batch size


def available_norms() -> list[str]:
    """Every normalization kind ``make_norm`` builds, in the lab's display order."""
    return list(NORM_KINDS)


def norm_label(kind: str) -> str:
    """The display name of normalization ``kind`` in the current report language."""
    return tr(f"norm.{kind}")


def make_norm(
    kind: str,
    channels: int,
    spatial: Sequence[int] = (),
    *,
    momentum: float | None = 0.1,
    steps: int = 0,
    affine: bool = True,
) -> nn.Module:
    """One normalization layer for ``(N, channels, *spatial)`` inputs.

    ``spatial == ()`` means a flat ``(N, channels)`` input (an MLP). ``momentum`` applies to
    the layers with running statistics (torch convention). ``steps`` sets BatchRenorm's
    warm-up (a quarter of the training steps). ``affine=False`` leaves out BatchNorm's
    learnable scale and shift (gamma, beta).
    """
    d = max(len(spatial), 1)
    if not affine and kind != "bn":
        raise LabError(f"affine=False is only offered for BatchNorm, not {kind!r}")
    if kind == "bn":
        return getattr(nknn, f"BatchNorm{d}d")(channels, momentum=momentum, affine=affine)
    if kind == "gn":
        return nknn.GroupNorm(math.gcd(GROUPS, channels), channels)
    if kind == "ln":
        return nknn.LayerNorm((channels, *spatial))
    if kind == "in":
        if not spatial:
            raise LabError("InstanceNorm needs spatial inputs (a CNN), not an MLP")
        return getattr(nknn, f"InstanceNorm{d}d")(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    if kind == "brn":
        return getattr(nknn, f"BatchRenorm{d}d")(
            channels, momentum=momentum, warmup_steps=steps // 4
        )
    if kind == "gbn":
        ghost = getattr(nknn, f"GhostBatchNorm{d}d")
        return ghost(channels, virtual_batch_size=GHOST_BATCH, momentum=momentum)
    raise LabError(
        f"unknown normalization {kind!r}: expected one of {', '.join(available_norms())}"
    )


def mlp(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (100, 100, 100),
    *,
    activation: str = "sigmoid",
    norm: str = "none",
    placement: str = "before",
    momentum: float | None = 0.1,
    affine: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Flatten -> [Linear -> norm -> act (-> Dropout)] x len(hidden) -> Linear.

    ``placement="after"`` puts the normalization after the activation. ``dropout > 0``
    appends ``nn.Dropout(dropout)`` to every hidden block (after the activation, and after
    the normalization whichever its placement). ``affine=False``: BatchNorm without gamma
    and beta. Linear layers keep their bias in every variant so that two networks can share
    one initialisation.
    """
    if not 0.0 <= dropout < 1.0:
        raise LabError(f"dropout must be in [0, 1), got {dropout!r}")
    act = _activation(activation)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        norm_layer = make_norm(norm, h, momentum=momentum, affine=affine)
        layers += _place([nn.Linear(width, h), norm_layer, act()], placement)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 32, 32),
    *,
    norm: str = "bn",
    placement: str = "before",
    momentum: float | None = 0.1,
    steps: int = 0,
    head: int = 0,
) -> nn.Sequential:
    """[Conv(k=3, pad 1) -> norm -> ReLU -> MaxPool(2)] x len(channels) -> Flatten -> Linear.

    ``input_shape`` is ``(C, L)`` (1-D convolutions) or ``(C, H, W)`` (2-D). Pooling stops
    halving a spatial axis once it reaches 1.

    ``head > 0`` puts a hidden layer in the classifier, as in many tutorials:
    ``Flatten -> Linear(flat, head) -> norm -> ReLU -> Linear(head, classes)``, whose
    normalization sees ``(N, head)`` vectors (see :func:`head_norm`). There a BatchNorm's
    statistics per feature come from the ``N`` examples of the batch alone (no spatial
    positions to average over), so the batch size is their sample size.
    """
    d = len(input_shape) - 1
    if d not in (1, 2):
        raise LabError(
            f"the CNN takes (C, L) or (C, H, W) inputs, got example shape {tuple(input_shape)}"
        )
    conv = nn.Conv1d if d == 1 else nn.Conv2d
    pool = nn.MaxPool1d if d == 1 else nn.MaxPool2d
    width, spatial = input_shape[0], list(input_shape[1:])
    layers: list[nn.Module] = []
    for c in channels:
        block = [
            conv(width, c, 3, padding=1),
            make_norm(norm, c, spatial, momentum=momentum, steps=steps),
            nn.ReLU(),
        ]
        layers += _place(block, placement)
        if min(spatial) >= 2:
            layers.append(pool(2))
            spatial = [s // 2 for s in spatial]
        width = c
    layers.append(nn.Flatten())
    width *= math.prod(spatial)
    if head > 0:
        block = [
            nn.Linear(width, head),
            head_norm(norm, head, momentum=momentum, steps=steps),
            nn.ReLU(),
        ]
        layers += _place(block, placement)
        width = head
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def head_norm(
    kind: str, features: int, *, momentum: float | None = 0.1, steps: int = 0
) -> nn.Module:
    """The normalization of kind ``kind`` for flat ``(N, features)`` activations.

    As :func:`make_norm` with no spatial axes (BatchNorm1d, GroupNorm over groups of
    features, LayerNorm over the features), except InstanceNorm, which has no flat form
    (one value per example and channel normalises to 0): an InstanceNorm network's head
    has no normalization (``nn.Identity``).
    """
    if kind == "in":
        return nn.Identity()
    return make_norm(kind, features, momentum=momentum, steps=steps)


def _place(block: list[nn.Module], placement: str) -> list[nn.Module]:
    """[weights, norm, act] for "before", [weights, act, norm] for "after"."""
    if placement == "before":
        return block
    if placement == "after":
        return [block[0], block[2], block[1]]
    raise LabError(f"placement must be 'before' or 'after' the activation, got {placement!r}")


def _activation(name: str):
    table = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
    if name not in table:
        raise LabError(f"unknown activation {name!r}: expected one of {', '.join(table)}")
    return table[name]


def copy_init(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` the weights of ``source``'s Linear/Conv layers, matched in order.

    Two networks that differ only in their normalization layers then start from the same
    initialisation (the normalization layers start at gamma = 1, beta = 0 anyway).
    """
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    src = [m for m in source.modules() if isinstance(m, kinds)]
    dst = [m for m in target.modules() if isinstance(m, kinds)]
    if len(src) != len(dst):
        raise ValueError(f"copy_init: {len(src)} weight layers in source, {len(dst)} in target")
    with torch.no_grad():
        for a, b in zip(src, dst, strict=True):
            b.weight.copy_(a.weight)
            if a.bias is not None and b.bias is not None:
                b.bias.copy_(a.bias)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """The normalization layers of ``model`` (normkit.nn classes), in module order."""
    return [m for m in model.modules() if type(m).__module__.startswith("normkit.nn")]
