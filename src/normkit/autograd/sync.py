"""The collectives of SyncBatchNorm: what crosses process boundaries, and nothing else.

Forward, each process sends its per-channel ``(count, mean, M2)`` (``M2 = sum((x - mean)**2)``)
and every process merges all of them with Chan et al.'s pairwise formula (1979)::

    n    = n_a + n_b
    d    = mean_b - mean_a
    mean = mean_a + d * n_b / n
    M2   = M2_a + M2_b + d**2 * n_a * n_b / n

which never forms raw sums of squares (no cancellation when ``|mean| >> std``) and gives a
shard with ``n = 0`` no weight. Backward, the processes all-reduce
``(sum(dy), sum(dy * x_hat), n)`` in one call, so ``dx`` uses the global sums.

Processes are named by their group's ``group_name`` (a string), which is what the
``torch.compile`` custom ops can carry. A failed collective (a peer died, a timeout) raises
:class:`SyncBatchNormError` naming the collective, the rank and the group, instead of a bare
backend error.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from normkit._shared import accumulation_dtype


class SyncBatchNormError(RuntimeError):
    """A collective of SyncBatchNorm failed (peer process gone, timeout, broken group)."""


def group_name_of(group: dist.ProcessGroup | None) -> str:
    """The name of ``group`` (``None``: the default, world group)."""
    return (group if group is not None else dist.group.WORLD).group_name


def resolve(group_name: str) -> dist.ProcessGroup:
    return torch._C._distributed_c10d._resolve_process_group(group_name)


def _failed(what: str, group: dist.ProcessGroup, exc: Exception) -> SyncBatchNormError:
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    where = (
        "the default process group"
        if group is dist.group.WORLD
        else f"process group {group.group_name!r}"
    )
    return SyncBatchNormError(
        f"SyncBatchNorm: {what} failed on rank {rank} of {size} in {where}; a peer process "
        f"may have died, hung or timed out ({exc})"
    )


def chan_merge(counts: list[float], means: Tensor, m2s: Tensor) -> tuple[float, Tensor, Tensor]:
    """Merge per-shard moments with Chan's pairwise formula.

    Args:
        counts: ``W`` values per channel behind each shard's statistics (0 allowed).
        means, m2s: ``(W, C)`` per-shard mean and ``M2 = sum((x - mean)**2)``.

    Returns ``(n, mean (C,), M2 (C,))`` of the union of the shards.
    """
    n = 0.0
    mean = torch.zeros_like(means[0])
    m2 = torch.zeros_like(m2s[0])
    for n_b, mean_b, m2_b in zip(counts, means, m2s, strict=True):
        if n_b == 0:
            continue
        total = n + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta * delta * (n * n_b / total)
        n = total
    return n, mean, m2


def gather_stats(
    mean: Tensor, var: Tensor, count: int, group_name: str
) -> tuple[Tensor, Tensor, int]:
    """Global ``(mean, var, count)`` from every process's local ones (``var`` biased).

    One ``all_gather`` of ``[count, mean, M2]`` per process, in float64; the merge runs on
    every process, so all of them hold identical results.
    """
    group = resolve(group_name)
    world = dist.get_world_size(group)
    channels = mean.shape[0]
    local = torch.cat(
        [
            torch.tensor([float(count)], dtype=torch.float64, device=mean.device),
            mean.to(torch.float64),
            var.to(torch.float64) * count,
        ]
    )
    gathered = [torch.empty_like(local) for _ in range(world)]
    try:
        dist.all_gather(gathered, local, group=group)
    except RuntimeError as exc:
        raise _failed("all_gather of the batch statistics", group, exc) from exc
    stacked = torch.stack(gathered)
    counts = stacked[:, 0].tolist()
    n, merged_mean, m2 = chan_merge(
        counts, stacked[:, 1 : 1 + channels], stacked[:, 1 + channels :]
    )
    merged_var = m2 / n if n > 0 else m2
    return merged_mean.to(mean.dtype), merged_var.to(var.dtype), int(n)


def all_reduce_grad_sums(
    sum_dy: Tensor, sum_dy_xhat: Tensor, count: int, group_name: str
) -> tuple[Tensor, Tensor, int]:
    """``(sum(dy), sum(dy * x_hat), n)`` summed over the group, in one all-reduce."""
    group = resolve(group_name)
    channels = sum_dy.shape[0]
    packed = torch.cat(
        [
            sum_dy,
            sum_dy_xhat,
            torch.tensor([float(count)], dtype=sum_dy.dtype, device=sum_dy.device),
        ]
    ).to(torch.float64)
    try:
        dist.all_reduce(packed, group=group)
    except RuntimeError as exc:
        raise _failed("all_reduce of the gradient sums", group, exc) from exc
    return (
        packed[:channels].to(sum_dy.dtype),
        packed[channels : 2 * channels].to(sum_dy.dtype),
        round(float(packed[-1])),
    )


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): each output depends on every process's input, so
    the gradient is the all-reduced sum of the output gradients."""

    @staticmethod
    def forward(ctx, tensor, group_name):
        ctx.group_name = group_name
        out = tensor.clone(memory_format=torch.contiguous_format)
        group = resolve(group_name)
        try:
            dist.all_reduce(out, group=group)
        except RuntimeError as exc:
            raise _failed("all_reduce (double backward)", group, exc) from exc
        return out

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad, ctx.group_name), None


def differentiable_global_stats(
    x: Tensor, group_name: str, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Global ``(mean, var)`` of ``x (N, C, *)`` as differentiable functions of every
    process's ``x`` (two-pass: the global mean, then the centered sum of squares); with a
    bool ``mask (N, *)``, of the valid positions only. Used by double backward only; every
    process must call it."""
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    dims = (0, *range(2, x.dim()))
    if mask is None:
        count = x.numel() // x.shape[1] if x.shape[1] else 0
        local = torch.cat([xa.sum(dim=dims), xa.new_full((1,), float(count))])
    else:
        valid = mask.unsqueeze(1)
        count = mask.sum(dtype=acc).reshape(1)
        local = torch.cat([torch.where(valid, xa, 0.0).sum(dim=dims), count])
    total = _AllReduceSum.apply(local, group_name)
    n = total[-1].detach()
    mean = total[:-1] / n
    centered = xa - mean.reshape(-1, *(1,) * (x.dim() - 2))
    if mask is not None:
        centered = torch.where(valid, centered, 0.0)
    m2 = centered.square().sum(dim=dims)
    var = _AllReduceSum.apply(m2, group_name) / n
    return mean, var
