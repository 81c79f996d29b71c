"""Synchronized batch normalization over torch.distributed, stateless."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from normkit.autograd import sync
from normkit.autograd.batch_norm_variants import batch_stats, bn_apply
from normkit.autograd.masked_variants import masked_batch_stats, masked_bn_apply
from normkit.backends._ops import define
from normkit.functional import _validate as v
from normkit.functional import single_sample as one
from normkit.functional._running import update_running_stats
from normkit.functional.batch_norm import batch_norm


def needs_sync(process_group: dist.ProcessGroup | None = None) -> bool:
    """True when torch.distributed is initialised and the group has more than one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(process_group) > 1


def sync_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    process_group: dist.ProcessGroup | None = None,
    *,
    mask: Tensor | None = None,
    num_batches_tracked: Tensor | None = None,
    single_sample: str = "error",
    backend: str | None = None,
    name: str = "sync_batch_norm",
) -> Tensor:
    r"""Batch normalization whose training statistics cover the inputs of every process in
    ``process_group`` (default: the world), with torch.distributed (gloo on CPU, nccl on GPU).

    .. math::
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,\qquad
        \mu, \sigma^2 = \text{mean and biased variance of the union of all processes' batches}

    Forward: each process computes its per-channel ``(count, mean, M2)``; one ``all_gather``
    and Chan's pairwise merge (:func:`normkit.autograd.sync.chan_merge`) give the global
    statistics on every process. Backward: one ``all_reduce`` of ``sum(dy)``,
    ``sum(dy * x_hat)`` and the count gives the input gradient; ``weight``/``bias``
    gradients are this process's own contribution (as :class:`torch.nn.SyncBatchNorm`), so
    DDP's gradient averaging yields the mean over processes. Batch sizes may differ per
    process, including 0 samples. The running statistics are updated identically on every
    process with the global mean and unbiased variance.

    Without synchronization to do (not training, torch.distributed not initialised, or a
    group of one process) this is exactly :func:`~normkit.functional.batch_norm`.

    ``mask`` (keyword): bool ``(N, *)``, True at valid positions of a padded batch. Each
    process contributes the ``(count, mean, M2)`` of its valid positions (a process with
    none contributes nothing), the backward sums run over valid positions, and padded
    positions output 0: the result is masked BatchNorm on the concatenated batch.

    ``single_sample`` (keyword): a training batch with one value per channel, as
    :func:`~normkit.functional.batch_norm`'s, where there is no synchronization to do. A
    synchronized step counts the values of the whole group, known only after the
    collective: one value in all raises on every process whatever the policy.

    Every process of the group must call this the same number of times, in the same order
    (and run backward, when training with gradients).
    """
    v.check_process_group(process_group, name)
    if not training or not needs_sync(process_group):
        return batch_norm(
            input, running_mean, running_var, weight, bias, training, momentum, eps, mask=mask,
            num_batches_tracked=num_batches_tracked, single_sample=single_sample,
            backend=backend, name=name,
        )  # fmt: skip
    if single_sample != "error":
        one.check_policy(single_sample, name)
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    v.check_group_member(process_group, name)
    group_name = sync.group_name_of(process_group)
    world_size = dist.get_world_size(process_group)
    if mask is not None:
        v.check_mask(input, mask, name)
        local_count = mask.sum(dtype=torch.float64)  # 0 allowed: the shard has no weight
        local_mean, local_var = masked_batch_stats(input, mask, local_count, backend)
        mean, var = _masked_global_stats_op(
            local_mean, local_var, local_count, group_name, world_size, running_mean,
            running_var, num_batches_tracked, momentum, list(input.shape), name,
        )  # fmt: skip
        return masked_bn_apply(
            input, mask, local_count, mean, torch.rsqrt(var + eps), weight, bias, eps,
            group_name=group_name, backend=backend,
        )  # fmt: skip
    local_mean, local_var = batch_stats(input, backend)
    mean, var = _global_stats_op(
        local_mean, local_var, input.numel() // input.shape[1], group_name, world_size,
        running_mean, running_var, num_batches_tracked, momentum, list(input.shape), name,
    )  # fmt: skip
    return bn_apply(
        input, mean, torch.rsqrt(var + eps), weight, bias, eps, group_name=group_name,
        backend=backend,
    )  # fmt: skip


def _global_stats(
    local_mean: Tensor,
    local_var: Tensor,
    local_count: int,
    group_name: str,
    world_size: int,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    input_shape: list[int],
    name: str,
    what: str = "value",
) -> tuple[Tensor, Tensor]:
    """Merge the statistics over the group (one all_gather), check the global count and
    update the running statistics; returns the global ``(mean, var)``."""
    mean, var, count = sync.gather_stats(local_mean, local_var, local_count, group_name)
    v.check_sync_count(count, world_size, input_shape, name, what)
    if running_mean is not None or running_var is not None:
        update_running_stats(
            running_mean, running_var, mean, var, count, momentum, num_batches_tracked, name
        )
    return mean, var


def _global_stats_impl(
    local_mean, local_var, local_count, group_name, world_size, running_mean, running_var,
    num_batches_tracked, momentum, input_shape, name,
):  # fmt: skip
    mean, var = _global_stats(
        local_mean, local_var, local_count, group_name, world_size, running_mean, running_var,
        num_batches_tracked, momentum, input_shape, name,
    )  # fmt: skip
    return mean.clone(), var.clone()


def _global_stats_fake(local_mean, local_var, local_count, group_name, world_size, *rest):
    return torch.empty_like(local_mean), torch.empty_like(local_var)


# The collective, the data-dependent count and the buffer updates stay inside one opaque op,
# so the whole layer compiles as one graph (fullgraph=True); eager calls run the same op.
_global_stats_op = define(
    "sync_batch_norm_global_stats(Tensor local_mean, Tensor local_var, int local_count, "
    "str group_name, int world_size, Tensor(a!)? running_mean, Tensor(b!)? running_var, "
    "Tensor(c!)? num_batches_tracked, float? momentum, int[] input_shape, str name) "
    "-> (Tensor, Tensor)",
    _global_stats_impl,
    _global_stats_fake,
    "CompositeExplicitAutograd",
)


def _masked_global_stats_impl(
    local_mean, local_var, local_count, group_name, world_size, running_mean, running_var,
    num_batches_tracked, momentum, input_shape, name,
):  # fmt: skip
    mean, var = _global_stats(
        local_mean, local_var, round(float(local_count)), group_name, world_size, running_mean,
        running_var, num_batches_tracked, momentum, input_shape, name, "valid value",
    )  # fmt: skip
    return mean.clone(), var.clone()


# The masked form: the local count is a tensor (the mask's sum), read inside the op.
_masked_global_stats_op = define(
    "sync_batch_norm_masked_global_stats(Tensor local_mean, Tensor local_var, "
    "Tensor local_count, str group_name, int world_size, Tensor(a!)? running_mean, "
    "Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, float? momentum, "
    "int[] input_shape, str name) -> (Tensor, Tensor)",
    _masked_global_stats_impl,
    _global_stats_fake,
    "CompositeExplicitAutograd",
)
