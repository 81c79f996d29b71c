"""Masked normalization over padded batches: the validated cores behind ``mask=`` of
:func:`~normkit.functional.batch_norm`, :func:`~normkit.functional.instance_norm` and
:func:`~normkit.functional.group_norm`, the valid-count check, and :func:`lengths_to_mask`.

``mask`` is a bool tensor of the input's shape without the channel dim, ``(N, *spatial)``,
True at valid positions. Statistics come from the valid positions only; padded positions
output exactly 0 and receive exactly 0 gradient (formulas: :mod:`normkit.reference`, masked
section). Masked BatchNorm over a padded batch is plain BatchNorm over the valid frames
gathered into one ``(n, C)`` batch, running statistics included: ``n`` is the valid count.

The valid count is read from the mask by the registered op ``normkit::masked_valid_count``,
which also refuses a training batch with too few valid values; reading it inside an op keeps
the data-dependent check out of ``torch.compile``'s graph (no graph break).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from normkit.backends import select
from normkit.backends._ops import define
from normkit.functional import _validate as v


def lengths_to_mask(
    lengths: Tensor | Sequence[int], max_len: int | None = None, *, name: str = "lengths_to_mask"
) -> Tensor:
    """The bool mask of a padded batch from its lengths: ``mask[i, t] = t < lengths[i]``.

    Args:
        lengths: ``(N,)`` integer tensor (its device is the mask's) or a sequence of ints.
        max_len: the padded length ``L``; default ``max(lengths)``.

    Returns a bool tensor ``(N, max_len)``, True at valid positions, e.g. for
    ``nk.nn.BatchNorm1d(C)(x, mask=lengths_to_mask(lengths, x.shape[-1]))`` with
    ``x (N, C, L)``.
    """
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    v.check_lengths(lengths, max_len, name)
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


# ---------------------------------------------------------------------------------------
# The valid count, read from the mask inside one opaque op (with the training checks).


def _count_impl(mask: Tensor, per_sample: bool, name: str) -> Tensor:
    if per_sample:
        counts = mask.reshape(mask.shape[0], -1).sum(1, dtype=torch.float64)
        v.check_valid_counts_per_sample(counts.tolist(), mask.shape, name)
        return counts
    count = mask.sum(dtype=torch.float64)
    v.check_valid_count(float(count), mask.shape, name)
    return count


def _count_fake(mask: Tensor, per_sample: bool, name: str) -> Tensor:
    shape = (mask.shape[0],) if per_sample else ()
    return mask.new_empty(shape, dtype=torch.float64)


_valid_count_op = define(
    "masked_valid_count(Tensor mask, bool per_sample, str name) -> Tensor",
    _count_impl,
    _count_fake,
    "CompositeExplicitAutograd",
)


def valid_count(mask: Tensor, name: str) -> Tensor:
    """The valid values per channel of a training batch (0-d float64 tensor); raises
    :class:`~normkit.functional.NormInputError` when there are fewer than 2."""
    return _valid_count_op(mask, False, name)


def valid_counts_per_sample(mask: Tensor, name: str) -> Tensor:
    """Each sample's valid positions ``(N,)`` float64; raises when a sample has exactly one
    or no sample has any."""
    return _valid_count_op(mask, True, name)


def sample_counts(mask: Tensor) -> Tensor:
    """Each sample's valid positions ``(N,)`` float64, unchecked (GroupNorm)."""
    return mask.reshape(mask.shape[0], -1).sum(1, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# The validated cores (the layers call these; the public functions validate first).


def normalize_per_channel_masked(
    input: Tensor,
    mask: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: Tensor | None,
    backend: str | None,
    name: str,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """Masked BatchNorm (optionally followed by ``act``) on validated arguments."""
    v.check_mask(input, mask, name)
    if training:
        v.check_cumulative_average(momentum, running_mean, running_var, num_batches_tracked, name)
        count = valid_count(mask, name)
        impl = select("masked_batch_norm_train", input, backend)
        return impl(
            input, mask, count, weight, bias, running_mean, running_var, num_batches_tracked,
            momentum, eps, act, negative_slope, name,
        )  # fmt: skip
    v.check_running_stats_for_eval(running_mean, running_var, name)
    impl = select("masked_batch_norm_eval", input, backend)
    return impl(input, mask, weight, bias, running_mean, running_var, eps, act, negative_slope)


def normalize_instances_masked(
    input: Tensor,
    mask: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_input_stats: bool,
    momentum: float,
    eps: float,
    backend: str | None,
    name: str,
) -> Tensor:
    """Masked InstanceNorm on validated arguments: each sample's channel over its own valid
    positions (or, without input statistics, the running ones, padded positions 0)."""
    v.check_mask(input, mask, name)
    if not use_input_stats:
        v.check_running_stats_for_eval(running_mean, running_var, name)
        x = input.contiguous()  # torch's instance norm returns contiguous outputs
        impl = select("masked_batch_norm_eval", x, backend)
        return impl(x, mask, weight, bias, running_mean, running_var, eps, "identity", 0.01)
    counts = valid_counts_per_sample(mask, name)
    impl = select("masked_instance_norm_train", input, backend)
    return impl(input, mask, counts, weight, bias, running_mean, running_var, momentum, eps, name)


def normalize_groups_masked(
    input: Tensor,
    mask: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    backend: str | None,
    name: str,
) -> Tensor:
    """Masked GroupNorm on validated arguments. A sample without valid positions outputs
    zeros (its groups have no statistics); nothing is refused for its count."""
    v.check_mask(input, mask, name)
    impl = select("masked_group_norm", input, backend)
    return impl(input, mask, sample_counts(mask), num_groups, weight, bias, eps)
