"""The gather oracle of masked normalization: the valid frames of a padded batch gathered
into one ``(M, C)`` batch (per sample for InstanceNorm/GroupNorm), plain layers on that,
and the results scattered back with zeros at the padded positions."""

from __future__ import annotations

import torch
from torch import Tensor


def gather(t: Tensor, mask: Tensor) -> Tensor:
    """The valid frames of ``t (N, C, *)``: ``(M, C)`` in mask order."""
    return t.movedim(1, -1)[mask]


def scatter(frames: Tensor, mask: Tensor, like: Tensor) -> Tensor:
    """``(M, C)`` frames back into ``like``'s shape, zeros at padded positions."""
    out = torch.zeros_like(like.movedim(1, -1))
    out[mask] = frames
    return out.movedim(1, -1)


def padded(t: Tensor, mask: Tensor) -> Tensor:
    """The values of ``t (N, C, *)`` at padded positions (flat)."""
    return t.movedim(1, -1)[~mask]


def prefix_mask(lengths: list[int], shape: tuple[int, ...]) -> Tensor:
    """A mask of ``shape (N, *spatial)``: sample ``i`` valid at its first ``lengths[i]``
    positions of the last spatial dim (all of the others); without spatial dims, the first
    ``lengths[0]`` samples."""
    spatial = shape[1:]
    if not spatial:
        return torch.arange(shape[0]) < lengths[0]
    last = torch.arange(spatial[-1])
    rows = torch.stack([last < k for k in lengths])  # (N, L_last)
    return (
        rows.reshape(len(lengths), *(1,) * (len(spatial) - 1), spatial[-1])
        .expand(len(lengths), *spatial)
        .contiguous()
    )


def hole_mask(shape: tuple[int, ...], generator: torch.Generator, p: float = 0.6) -> Tensor:
    """Random valid positions (holes anywhere): at least 2 per sample, or, for a mask over
    samples only (``(N,)``), at least 2 samples."""
    mask = torch.rand(shape, generator=generator) < p
    if len(shape) == 1:
        mask[:2] = True
    else:
        mask.reshape(shape[0], -1)[:, :2] = True
    assert not mask.all(), "a mask with holes"
    return mask


def poison(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with NaN and Inf at its padded positions (they must never reach a result)."""
    values = x.movedim(1, -1).clone()
    pads = values[~mask]
    pads[..., ::2] = float("nan")
    pads[..., 1::2] = float("inf")
    values[~mask] = pads
    return values.movedim(-1, 1).contiguous()
