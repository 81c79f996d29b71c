"""Every user-facing check of the functional layer, in one voice.

Messages start with the layer's name (``"BatchNorm2d(64)"`` for a module, the function's
name for a direct functional call), then say what was expected and what came. Where torch
raises a ``RuntimeError`` for the same mistake, the exception also subclasses
``RuntimeError``, so code written against torch keeps catching it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from normkit._shared import ACTIVATIONS


class NormInputError(ValueError, RuntimeError):
    """An input or argument whose shape or value does not fit the layer."""


class NormDTypeError(TypeError, RuntimeError):
    """An input of a dtype normalization is not defined for (integers, bool, complex)."""


def shape_str(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def check_floating(input: Tensor, name: str) -> None:
    if not input.is_floating_point():
        raise NormDTypeError(
            f"{name}: expected a floating-point input (float32, float64, float16 or "
            f"bfloat16), got {input.dtype}"
        )


def check_rank(input: Tensor, allowed: Sequence[int], name: str) -> None:
    """The torch form: ``expected 4D input (got 3D input)``."""
    if input.dim() not in allowed:
        want = " or ".join(f"{d}D" for d in allowed)
        raise NormInputError(f"{name}: expected {want} input (got {input.dim()}D input)")


def check_min_rank(input: Tensor, min_rank: int, name: str, layout: str) -> None:
    if input.dim() < min_rank:
        raise NormInputError(
            f"{name}: expected an input of at least {min_rank} dimensions {layout} "
            f"(got {input.dim()}D input of size {shape_str(input.shape)})"
        )


def check_channels(input: Tensor, expected: int, name: str, dim: int = 1) -> None:
    got = input.shape[dim]
    if got != expected:
        raise NormInputError(
            f"{name}: expected {expected} channels at dim {dim} of the input, got {got} "
            f"(input size {shape_str(input.shape)})"
        )


def check_vector(t: Tensor | None, size: int, what: str, name: str) -> None:
    """A per-channel tensor (weight, bias, running statistics) must have ``size`` elements."""
    if t is not None and (t.dim() != 1 or t.shape[0] != size):
        raise NormInputError(
            f"{name}: expected {what} of size ({size},) to match the input's {size} "
            f"channels, got {what} of size {shape_str(t.shape)}"
        )


def check_per_channel_arguments(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    training: bool,
    name: str,
    min_rank: int = 2,
) -> None:
    """What every per-channel normalization (BatchNorm family, InstanceNorm) checks: a
    floating ``(N, C, *)`` input, ``(C,)`` per-channel tensors, a valid ``eps``."""
    check_floating(input, name)
    check_min_rank(input, min_rank, name, "(N, C, *)" if min_rank == 2 else "(N, C, L, ...)")
    channels = input.shape[1]
    for what, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        check_vector(t, channels, what, name)
    check_eps(eps, training, name)


def check_param_shape(t: Tensor | None, shape: tuple[int, ...], what: str, name: str) -> None:
    if t is not None and tuple(t.shape) != shape:
        raise NormInputError(
            f"{name}: expected {what} of size {shape_str(shape)}, got {shape_str(t.shape)}"
        )


def check_more_than_one_value_per_channel(input: Tensor, name: str) -> None:
    """Training statistics need at least 2 values per channel (torch's rule: N * prod(spatial))."""
    values = input.shape[0] * math.prod(input.shape[2:])
    if values == 1:
        raise NormInputError(
            f"{name}: Expected more than 1 value per channel when training, got input size "
            f"{shape_str(input.shape)}"
        )


def check_more_than_one_spatial_element(input: Tensor, name: str) -> None:
    if math.prod(input.shape[2:]) == 1:
        raise NormInputError(
            f"{name}: Expected more than 1 spatial element when training, got input size "
            f"{shape_str(input.shape)}"
        )


def check_groups(num_channels: int, num_groups: int, name: str) -> None:
    if (
        not isinstance(num_groups, int)
        or isinstance(num_groups, bool)
        or num_groups < 1
        or num_channels % num_groups != 0
    ):
        raise NormInputError(
            f"{name}: num_channels ({num_channels}) must be divisible by num_groups "
            f"({num_groups}), a positive integer"
        )


def check_group_norm_size(input: Tensor, num_groups: int, name: str) -> None:
    """torch's condition: ``N * C / G * prod(spatial) == 1`` is refused."""
    values = input.shape[0] * input.shape[1] // num_groups * math.prod(input.shape[2:])
    if values == 1:
        raise NormInputError(
            f"{name}: Expected more than 1 value per group, got input size "
            f"{shape_str(input.shape)} with {num_groups} groups"
        )


def check_normalized_shape(input: Tensor, normalized_shape: tuple[int, ...], name: str) -> None:
    k = len(normalized_shape)
    if k == 0 or input.dim() < k or tuple(input.shape[-k:]) != normalized_shape:
        raise NormInputError(
            f"{name}: Given normalized_shape={list(normalized_shape)}, expected input with "
            f"shape [*, {', '.join(str(s) for s in normalized_shape)}], but got input of size "
            f"{shape_str(input.shape)}"
        )


def check_eps(eps: float, training: bool, name: str) -> None:
    if training and not eps > 0.0:
        raise NormInputError(f"{name}: eps must be positive during training, got {eps}")
    if not eps >= 0.0:
        raise NormInputError(f"{name}: eps must be non-negative, got {eps}")


def check_running_stats_for_eval(
    running_mean: Tensor | None, running_var: Tensor | None, name: str
) -> None:
    if running_mean is None or running_var is None:
        raise NormInputError(
            f"{name}: running_mean and running_var must be given when normalizing with "
            f"running statistics (training=False), got "
            f"running_mean={'None' if running_mean is None else 'a tensor'}, "
            f"running_var={'None' if running_var is None else 'a tensor'}"
        )


def check_cumulative_average(
    momentum: float | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    name: str,
) -> None:
    """``momentum=None`` (the cumulative average) counts batches in ``num_batches_tracked``."""
    if (
        momentum is None
        and num_batches_tracked is None
        and (running_mean is not None or running_var is not None)
    ):
        raise NormInputError(
            f"{name}: momentum=None (cumulative moving average) needs num_batches_tracked"
        )


def check_layer_input(input: Tensor, ranks: Sequence[int], channels: int, name: str) -> None:
    """A layer's input: floating, of an accepted rank, with ``channels`` at dim 1."""
    if input.is_floating_point() and input.dim() in ranks and input.shape[1] == channels:
        return
    check_floating(input, name)
    check_rank(input, ranks, name)
    check_channels(input, channels, name)


def check_momentum(momentum: float | None, name: str) -> None:
    if momentum is not None and not (0.0 <= momentum <= 1.0):
        raise NormInputError(
            f"{name}: momentum must be in [0, 1] or None (cumulative average), got {momentum}; "
            "note torch's convention: running = (1 - momentum) * running + momentum * batch"
        )


def check_num_features(num_features: int, name: str, what: str = "num_features") -> None:
    if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
        raise NormInputError(f"{name}: {what} must be a positive integer, got {num_features!r}")


# ---------------------------------------------------------------------------------------
# BatchNorm variants (batch renorm, ghost batches, fused activations, sync BN).


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_renorm_limits(rmax: float, dmax: float, name: str) -> None:
    """Batch renorm clips ``r`` to ``[1/rmax, rmax]`` and ``d`` to ``[-dmax, dmax]``."""
    if not _is_real(rmax) or not math.isfinite(rmax) or rmax < 1.0:
        raise NormInputError(
            f"{name}: rmax must be a finite number >= 1 (r is clipped to [1/rmax, rmax]; "
            f"rmax=1 disables the correction), got rmax={rmax!r}"
        )
    if not _is_real(dmax) or not math.isfinite(dmax) or dmax < 0.0:
        raise NormInputError(
            f"{name}: dmax must be a finite number >= 0 (d is clipped to [-dmax, dmax]; "
            f"dmax=0 disables the correction), got dmax={dmax!r}"
        )


def check_warmup_steps(warmup_steps: int, name: str) -> None:
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise NormInputError(
            f"{name}: warmup_steps must be a non-negative integer (0: fixed rmax/dmax), "
            f"got {warmup_steps!r}"
        )


def check_virtual_batch_size(virtual_batch_size: int, name: str) -> None:
    if (
        not isinstance(virtual_batch_size, int)
        or isinstance(virtual_batch_size, bool)
        or virtual_batch_size < 1
    ):
        raise NormInputError(
            f"{name}: virtual_batch_size must be a positive integer (samples per ghost "
            f"batch), got {virtual_batch_size!r}"
        )


def check_ghost_batch_values(input: Tensor, virtual_batch_size: int, name: str) -> None:
    """Each ghost batch needs more than one value per channel to have statistics."""
    if virtual_batch_size * math.prod(input.shape[2:]) < 2:
        raise NormInputError(
            f"{name}: virtual_batch_size={virtual_batch_size} gives ghost batches of 1 value "
            f"per channel for input size {shape_str(input.shape)}; expected more than 1 value "
            "per channel in each ghost batch when training"
        )


def check_activation(act: str, negative_slope: float, name: str) -> None:
    if act not in ACTIVATIONS:
        raise NormInputError(f"{name}: act must be one of {list(ACTIVATIONS)}, got {act!r}")
    if not _is_real(negative_slope) or not math.isfinite(negative_slope):
        raise NormInputError(
            f"{name}: negative_slope must be a finite number, got {negative_slope!r}"
        )


def check_running_stats_for_renorm(
    running_mean: Tensor | None, running_var: Tensor | None, name: str
) -> None:
    if running_mean is None or running_var is None:
        raise NormInputError(
            f"{name}: batch renormalization needs running_mean and running_var in training "
            "(r and d compare the batch statistics with them), got "
            f"running_mean={'None' if running_mean is None else 'a tensor'}, "
            f"running_var={'None' if running_var is None else 'a tensor'}"
        )


def check_process_group(process_group: object, name: str) -> None:
    """``None`` (the default group) or a ``torch.distributed.ProcessGroup``."""
    if process_group is None:
        return
    import torch.distributed as dist

    if not dist.is_available() or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"{name}: process_group must be None (the default group) or a "
            f"torch.distributed.ProcessGroup, got {type(process_group).__name__}"
        )


def check_group_member(process_group: object, name: str) -> None:
    """This process must belong to the group it synchronizes over."""
    import torch.distributed as dist

    if dist.get_rank(process_group) < 0:
        raise NormInputError(
            f"{name}: this process (global rank {dist.get_rank()}) is not a member of "
            f"process_group {process_group.group_name!r}; create the layer with the group "
            "this process belongs to"
        )


def check_sync_count(
    count: int, world_size: int, input_shape: Sequence[int], name: str, what: str = "value"
) -> None:
    """``what``: "value", or "valid value" for a masked batch."""
    if count <= 1:
        raise NormInputError(
            f"{name}: Expected more than 1 {what} per channel when training, got {count} "
            f"across the {world_size} processes of the group (local input size "
            f"{shape_str(input_shape)})"
        )


# ---------------------------------------------------------------------------------------
# Masks (masked normalization over padded batches).


def mask_shape(input: Tensor) -> tuple[int, ...]:
    """The mask shape an input ``(N, C, *spatial)`` takes: ``(N, *spatial)``."""
    return (int(input.shape[0]), *(int(s) for s in input.shape[2:]))


def check_mask(input: Tensor, mask: object, name: str) -> None:
    """``mask`` is a bool tensor of shape ``(N, *spatial)`` on the input's device."""
    expected = mask_shape(input)
    if not isinstance(mask, Tensor):
        raise NormDTypeError(
            f"{name}: expected mask to be a bool tensor of size {shape_str(expected)} "
            f"(True = valid position), got {type(mask).__name__}"
        )
    if mask.dtype is not torch.bool:
        raise NormDTypeError(
            f"{name}: expected a bool mask (True = valid position), got mask of dtype "
            f"{mask.dtype}; pass mask.bool(), or build one with "
            "normkit.functional.lengths_to_mask(lengths, max_len)"
        )
    if tuple(mask.shape) != expected:
        raise NormInputError(
            f"{name}: expected mask of size {shape_str(expected)} (the input's size without "
            f"the channel dim 1), got mask of size {shape_str(mask.shape)} for input of size "
            f"{shape_str(input.shape)}"
        )
    if mask.device != input.device:
        raise NormInputError(
            f"{name}: expected mask on the input's device {input.device}, got mask on {mask.device}"
        )


def check_valid_count(count: float, mask_size: Sequence[int], name: str) -> None:
    """Training statistics need more than one valid value per channel."""
    if count == 0:
        raise NormInputError(
            f"{name}: the mask has no valid position (all False, mask of size "
            f"{shape_str(mask_size)}); expected more than 1 valid value per channel when "
            "training"
        )
    if count <= 1:
        raise NormInputError(
            f"{name}: Expected more than 1 valid value per channel when training, got "
            f"{int(count)} (mask of size {shape_str(mask_size)} with {int(count)} True)"
        )


def check_valid_counts_per_sample(
    counts: Sequence[float], mask_size: Sequence[int], name: str
) -> None:
    """InstanceNorm's statistics are each sample's own: a sample with valid positions needs
    more than one of them, and the batch needs at least one such sample."""
    if not any(c > 0 for c in counts):
        raise NormInputError(
            f"{name}: the mask has no valid position (all False, mask of size "
            f"{shape_str(mask_size)}); expected more than 1 valid position per sample when "
            "normalizing with instance statistics"
        )
    for i, c in enumerate(counts):
        if c == 1:
            raise NormInputError(
                f"{name}: Expected more than 1 valid position per sample when normalizing "
                f"with instance statistics, got 1 in sample {i} (mask of size "
                f"{shape_str(mask_size)}); samples with no valid position are allowed"
            )


def check_lengths(lengths: Tensor, max_len: int, name: str) -> None:
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.is_complex():
        raise NormInputError(
            f"{name}: expected lengths as a 1-D tensor or sequence of integers, got "
            f"{lengths.dtype} of size {shape_str(lengths.shape)}"
        )
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 0:
        raise NormInputError(f"{name}: max_len must be a non-negative integer, got {max_len!r}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
        raise NormInputError(
            f"{name}: expected lengths in [0, max_len={max_len}], got lengths from "
            f"{int(lengths.min())} to {int(lengths.max())}"
        )
