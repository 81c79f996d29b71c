"""GhostBatchNorm1d/2d: batch normalization over virtual (ghost) batches."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.ghost_batch_norm import ghost_batch_norm
from normkit.functional.single_sample import one_value_per_channel
from normkit.nn._base import PerChannelLayer, check_per_channel_args
from normkit.nn._single_sample import SingleSamplePolicy, single_sample_forward

_DOC_TEMPLATE = r"""Ghost batch normalization over a {rank} input (`Hoffer et al. 2017
    <https://arxiv.org/abs/1705.08741>`__; Keras's ``virtual_batch_size``): in training,
    the batch is cut into ghost batches of ``virtual_batch_size`` consecutive samples, each
    normalized with its own mean and biased variance (the noise of small batches, with the
    throughput of a large one).

    .. math::
        y_i = \gamma \frac{{x_i - \mu_{{g(i)}}}}{{\sqrt{{\sigma^2_{{g(i)}} + \epsilon}}}} + \beta

    Split: ``N // virtual_batch_size`` full ghost batches, then the remaining samples as a
    smaller last one (a single left-over sample of a ``(N, C)`` input joins the previous
    ghost batch, having no variance of its own). ``N <= virtual_batch_size``: plain
    BatchNorm.

    Running statistics, once per forward, from the ``k`` ghost batches (``n_g`` values per
    channel each, ``n`` in all)::

        batch_mean = sum(n_g * mu_g) / n
        batch_var  = sum(n_g * sigma2_g) / (n - k)      # pooled, unbiased within-ghost variance
        running    = (1 - momentum) * running + momentum * batch

    Inference normalizes with them, exactly as BatchNorm does; state dict keys are
    BatchNorm's.

    Args:
        num_features: number of channels ``C``.
        virtual_batch_size: samples per ghost batch. Default: 32
        eps: added to the variance. Default: 1e-5
        momentum: running-statistics factor, or ``None`` (cumulative average). Default: 0.1
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: True
        single_sample: a training batch with one value per channel (keyword): as
            :class:`normkit.nn.BatchNorm2d`'s. Default: ``"error"``

    Shape:
        Input and output: {shapes}.

    Examples::

        >>> import torch, normkit as nk
        >>> gbn = nk.nn.{name}(3, virtual_batch_size=4)
        >>> y = gbn(5 + torch.randn({example}))
        >>> bool(y[:4].mean().abs() < 1e-5), bool(y[4:].mean().abs() < 1e-5)
        (True, True)
"""


def ghost_batch_norm_forward(layer: _GhostBatchNorm, input: Tensor) -> Tensor:
    """The forward of the GhostBatchNorm layers (one FX node; see :mod:`normkit.nn._base`)."""
    name = layer._check_input(input)
    if layer.training and layer._single_sample != "error" and one_value_per_channel(input):
        return single_sample_forward(layer, input, name)  # one sample: one ghost batch
    return ghost_batch_norm(
        input,
        layer.running_mean,
        layer.running_var,
        layer.weight,
        layer.bias,
        layer.training,
        layer.momentum,
        layer.eps,
        layer.virtual_batch_size,
        num_batches_tracked=layer.num_batches_tracked if layer.training else None,
        name=name,
    )


torch.fx.wrap("ghost_batch_norm_forward")


class _GhostBatchNorm(SingleSamplePolicy, PerChannelLayer):
    """Mixed into torch's BatchNorm classes (same state dict and inference)."""

    virtual_batch_size: int

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        single_sample: str = "error",
    ) -> None:
        name = type(self).__name__
        check_per_channel_args(name, num_features, eps, momentum)
        v.check_virtual_batch_size(virtual_batch_size, name)
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self.virtual_batch_size = virtual_batch_size
        self.single_sample = single_sample

    def forward(self, input: Tensor) -> Tensor:
        return ghost_batch_norm_forward(self, input)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, virtual_batch_size={self.virtual_batch_size}, "
            f"eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
            f"{self._single_sample_repr()}"
        )


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D", name="GhostBatchNorm1d", shapes="``(N, C)`` or ``(N, C, L)``",
        example="8, 3",
    )  # fmt: skip
    _ranks = (2, 3)


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D", name="GhostBatchNorm2d", shapes="``(N, C, H, W)``", example="8, 3, 2, 2"
    )
    _ranks = (4,)
