"""Synchronized batch normalization over torch.distributed, stateless."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from normkit.autograd import sync
from normkit.autograd.batch_norm_variants import batch_stats, bn_apply
from normkit.functional import _validate as v
from normkit.functional._bn_common import check_bn_arguments
from normkit.functional._running import update_running_stats
from normkit.functional.batch_norm import _as_ncl, batch_norm


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
    num_batches_tracked: Tensor | None = None,
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

    Every process of the group must call this the same number of times, in the same order
    (and run backward, when training with gradients).
    """
    v.check_process_group(process_group, name)
    if not training or not needs_sync(process_group):
        return batch_norm(
            input, running_mean, running_var, weight, bias, training, momentum, eps,
            num_batches_tracked=num_batches_tracked, backend=backend, name=name,
        )  # fmt: skip
    check_bn_arguments(input, running_mean, running_var, weight, bias, eps, training, name)
    v.check_group_member(process_group, name)
    group_name = sync.group_name_of(process_group)
    x = _as_ncl(input)
    local_mean, local_var = batch_stats(x, backend)
    local_count = x.shape[0] * x.shape[2]
    mean, var, count = sync.gather_stats(local_mean, local_var, local_count, group_name)
    v.check_sync_count(count, dist.get_world_size(process_group), input, name)
    y = bn_apply(
        x, mean, torch.rsqrt(var + eps), weight, bias, eps, group_name=group_name,
        backend=backend,
    )  # fmt: skip
    if running_mean is not None or running_var is not None:
        update_running_stats(
            running_mean, running_var, mean, var, count, momentum, num_batches_tracked, name
        )
    return y.reshape(input.shape)
