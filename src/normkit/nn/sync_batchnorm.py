"""SyncBatchNorm: BatchNorm with statistics over all processes of a torch.distributed group."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.single_sample import one_value_per_channel
from normkit.functional.sync_batch_norm import needs_sync, sync_batch_norm
from normkit.nn._base import PerChannelLayer, check_per_channel_args
from normkit.nn._single_sample import SingleSamplePolicy, single_sample_forward
from normkit.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, batch_norm_forward


def sync_batch_norm_forward(
    layer: SyncBatchNorm, input: Tensor, mask: Tensor | None = None
) -> Tensor:
    """The forward of SyncBatchNorm (one FX node; see :mod:`normkit.nn._base`); ``mask``: a
    padded batch's valid positions."""
    if not layer.training:
        # Like torch: never synchronize in eval mode, even with batch statistics
        # (track_running_stats=False).
        return batch_norm_forward(layer, input, mask)
    name = layer._check_input(input)
    if layer._single_sample != "error" and mask is None and one_value_per_channel(input):
        # A synchronized step counts the whole group's values (known after the collective):
        # the policy applies where this process normalizes alone.
        if not needs_sync(layer.process_group):
            return single_sample_forward(layer, input, name)
    track = layer.track_running_stats
    return sync_batch_norm(
        input,
        layer.running_mean if track else None,
        layer.running_var if track else None,
        layer.weight,
        layer.bias,
        True,
        layer.momentum,
        layer.eps,
        layer.process_group,
        mask=mask,
        num_batches_tracked=layer.num_batches_tracked if track else None,
        name=name,
    )


torch.fx.wrap("sync_batch_norm_forward")


class SyncBatchNorm(SingleSamplePolicy, PerChannelLayer, nn.modules.batchnorm._BatchNorm):
    r"""Batch normalization synchronized over the processes of a torch.distributed group,
    a drop-in for :class:`torch.nn.SyncBatchNorm` that also runs on CPU (gloo).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    In training, ``E`` and ``Var`` (biased) are over the union of every process's batch.
    Each process sends its per-channel ``(count, mean, M2)``, merged on every process with
    Chan's pairwise formula (never raw sums of squares); the backward all-reduces
    ``sum(dy)``, ``sum(dy * x_hat)`` and the count. ``weight``/``bias`` gradients are this
    process's own contribution, exactly as in :class:`torch.nn.SyncBatchNorm`, so
    DistributedDataParallel's averaging produces the right update. Processes may hold
    different batch sizes, zero included. Running statistics, updated identically on every
    process, use BatchNorm's rule with the global mean and unbiased variance.

    Padded batches: ``layer(x, mask=m)``, ``m`` bool ``(N, *spatial)`` (True = valid
    position): each process contributes its valid positions' ``(count, mean, M2)`` (a
    process with none contributes nothing), the backward sums run over valid positions and
    padded positions output 0: masked BatchNorm on the concatenated batch.

    Falls back to plain BatchNorm when not training, when torch.distributed is not
    initialised, or when the group has one process. A collective that fails (a peer died,
    a timeout of the process group) raises :class:`normkit.autograd.sync.SyncBatchNormError`.

    Args:
        num_features: number of channels ``C``.
        eps: added to the variance. Default: 1e-5
        momentum: running-statistics factor, or ``None`` (cumulative average). Default: 0.1
        affine: learnable ``weight`` and ``bias``. Default: True
        track_running_stats: keep running statistics. Default: True
        process_group: the group to synchronize over; ``None`` is the world. Default: None
        bias: learn beta (only with ``affine``). Default: True
        single_sample: a batch with one value per channel where this process normalizes
            alone (eval mode, no process group, a group of one): as
            :class:`normkit.nn.BatchNorm2d`'s. A synchronized step counts the values of
            the whole group; one value in all raises on every process. Default: "error"

    Shape:
        Input and output: ``(N, C, *)``.

    A subclass of torch's ``_BatchNorm`` with torch's state dict keys, ``repr`` and
    attributes, but deliberately **not** of :class:`torch.nn.SyncBatchNorm`: torch's
    DistributedDataParallel refuses any ``torch.nn.SyncBatchNorm`` instance in a CPU model
    ("SyncBatchNorm layers only work with GPU modules"), which would defeat the point of
    this layer. Use :meth:`convert_sync_batchnorm` to switch a model's BatchNorm layers:
    torch's own ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` replaces every BatchNorm
    subclass, normkit's included, by torch's layer, which rejects CPU inputs.
    """

    process_group: dist.ProcessGroup | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        single_sample: str = "error",
    ) -> None:
        name = type(self).__name__
        check_per_channel_args(name, num_features, eps, momentum)
        v.check_process_group(process_group, name)
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.process_group = process_group
        self.single_sample = single_sample

    def extra_repr(self) -> str:
        return super().extra_repr() + self._single_sample_repr()

    def _check_input_dim(self, input: Tensor) -> None:
        v.check_min_rank(input, 2, self._layer_name(), "(N, C, *)")

    def _check_input(self, input: Tensor) -> str:
        name = self._layer_name()
        v.check_floating(input, name)
        self._check_input_dim(input)
        v.check_channels(input, self.num_features, name)
        return name

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return sync_batch_norm_forward(self, input, mask)

    @classmethod
    def convert_sync_batchnorm(
        cls, module: nn.Module, process_group: dist.ProcessGroup | None = None
    ) -> nn.Module:
        """Replace every BatchNorm layer of ``module`` (torch's ``BatchNorm1d/2d/3d`` and
        ``SyncBatchNorm``, normkit's ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm``) by a
        normkit :class:`SyncBatchNorm` over ``process_group``, sharing its parameters and
        buffers, keeping its training flag (and ``qconfig``). Returns the converted module;
        a BatchNorm passed in itself is returned as a new object, like torch's. A normkit
        layer's ``single_sample`` policy carries over.

        BatchNorm variants with other semantics (renorm, ghost, fused activation, frozen)
        are left as they are.
        """
        output = module
        if _is_plain_batch_norm(module):
            output = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
                bias=module.bias is not None,
                single_sample=getattr(module, "single_sample", "error"),
            )
            if module.affine:
                with torch.no_grad():
                    output.weight = module.weight
                    output.bias = module.bias
            output.running_mean = module.running_mean
            output.running_var = module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.training = module.training
            if hasattr(module, "qconfig"):
                output.qconfig = module.qconfig
        for child_name, child in module.named_children():
            output.add_module(child_name, cls.convert_sync_batchnorm(child, process_group))
        return output


_PLAIN_BATCH_NORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm,
)  # fmt: skip


def _is_plain_batch_norm(module: nn.Module) -> bool:
    """torch's or normkit's BatchNorm1d/2d/3d or SyncBatchNorm, not a variant of them."""
    return type(module) in _PLAIN_BATCH_NORMS
