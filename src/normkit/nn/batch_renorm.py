"""BatchRenorm1d/2d/3d: batch renormalization (Ioffe 2017) with a warm-up schedule."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.batch_renorm import batch_renorm, renorm_limits, renorm_single_sample
from normkit.functional.single_sample import one_value_per_channel
from normkit.nn._base import PerChannelLayer, check_per_channel_args
from normkit.nn._single_sample import SingleSamplePolicy, warn_once

_DOC_TEMPLATE = r"""Batch renormalization over a {rank} input (`Ioffe 2017
    <https://arxiv.org/abs/1702.03275>`__): BatchNorm that stays consistent between
    training and inference when batches are small or not i.i.d.

    Training, per channel, with the batch mean :math:`\mu_B`, the batch standard deviation
    :math:`\sigma_B = \sqrt{{\mathrm{{Var}}_B[x] + \epsilon}}` (biased variance) and the running
    ones :math:`\mu`, :math:`\sigma = \sqrt{{\mathrm{{running\_var}} + \epsilon}}`:

    .. math::
        r = \mathrm{{clip}}\left(\frac{{\sigma_B}}{{\sigma}}, \frac{{1}}{{r_{{max}}}}, r_{{max}}\right),\quad
        d = \mathrm{{clip}}\left(\frac{{\mu_B - \mu}}{{\sigma}}, -d_{{max}}, d_{{max}}\right),\quad
        y = \gamma \left(\frac{{x - \mu_B}}{{\sigma_B}}\, r + d\right) + \beta

    ``r`` and ``d`` are constants for the backward (stop-gradient). Inference is BatchNorm's:
    :math:`y = \gamma (x - \mu) / \sigma + \beta`. With ``rmax=1, dmax=0`` the layer is
    exactly :class:`normkit.nn.{bn}`.

    Schedule: ``warmup_steps=0`` keeps ``rmax``/``dmax`` fixed. Otherwise they ramp linearly
    from ``(1, 0)`` (plain BatchNorm) at step 0 to ``(rmax, dmax)`` at ``warmup_steps`` (the
    paper ramps rmax 1 -> 3 and dmax 0 -> 5). The step is ``num_batches_tracked``, the
    number of training batches seen, so the schedule position is saved in and restored
    from the state dict, whose keys are exactly BatchNorm's (checkpoints load both ways).

    Running statistics follow BatchNorm's rule (mean and **unbiased** variance)::

        running_mean = (1 - momentum) * running_mean + momentum * batch_mean
        running_var  = (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)

    (the paper keeps an average of :math:`\sigma` instead; keeping the variance is what makes
    inference and state dicts identical to BatchNorm's). A batch with NaN/Inf statistics
    leaves them (and the schedule) untouched, with a ``RuntimeWarning``.

    Padded batches: ``layer(x, mask=m)``, ``m`` bool ``(N, *spatial)`` (True = valid
    position): batch statistics, ``r``, ``d`` and the running update from the valid
    positions only; padded positions output 0 and get 0 gradient.

    Args:
        num_features: number of channels ``C``.
        eps: added to the variances. Default: 1e-5
        momentum: running-statistics factor, or ``None`` (cumulative average). Default: 0.1
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: True
        rmax: upper limit of ``r`` (>= 1). Default: 3.0
        dmax: limit of ``|d|`` (>= 0). Default: 5.0
        warmup_steps: training steps of the linear ramp, 0 for fixed limits. Default: 0
        single_sample: a training batch with one value per channel (keyword):
            ``"error"`` (BatchNorm's), ``"running_stats"`` (the inference output) or
            ``"skip_update"`` (the training output ``gamma * d + beta``, warned once);
            neither updates the statistics or the schedule. Default: ``"error"``

    Shape:
        Input and output: {shapes}.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.{name}(3, rmax=3.0, dmax=5.0, warmup_steps=1000)
        >>> y = layer(torch.randn({example}))
        >>> layer.current_limits()
        (1.002, 0.005)
"""


def batch_renorm_forward(layer: _BatchRenorm, input: Tensor, mask: Tensor | None = None) -> Tensor:
    """The forward of the BatchRenorm layers (one FX node; see :mod:`normkit.nn._base`);
    ``mask``: a padded batch's valid positions."""
    name = layer._check_input(input)
    rmax, dmax = layer.rmax, layer.dmax
    if layer.training:
        rmax, dmax = renorm_limits(
            layer.num_batches_tracked, layer.rmax, layer.dmax, layer.warmup_steps
        )
        policy = layer._single_sample
        if policy != "error" and mask is None and one_value_per_channel(input):
            if policy == "skip_update":
                warn_once(layer, input, name)
            return renorm_single_sample(
                input, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                layer.eps, rmax, dmax, policy, None, name,
            )  # fmt: skip
    return batch_renorm(
        input,
        layer.running_mean,
        layer.running_var,
        layer.weight,
        layer.bias,
        layer.training,
        layer.momentum,
        layer.eps,
        rmax,
        dmax,
        mask=mask,
        num_batches_tracked=layer.num_batches_tracked if layer.training else None,
        name=name,
    )


torch.fx.wrap("batch_renorm_forward")


class _BatchRenorm(SingleSamplePolicy, PerChannelLayer):
    """State and schedule shared by BatchRenorm1d/2d/3d (mixed into torch's BatchNorm
    classes, whose state dict and inference they share; only the rank check differs)."""

    rmax: float
    dmax: float
    warmup_steps: int

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        rmax: float = 3.0,
        dmax: float = 5.0,
        warmup_steps: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        single_sample: str = "error",
    ) -> None:
        name = type(self).__name__
        check_per_channel_args(name, num_features, eps, momentum)
        v.check_renorm_limits(rmax, dmax, name)
        v.check_warmup_steps(warmup_steps, name)
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self.rmax = float(rmax)
        self.dmax = float(dmax)
        self.warmup_steps = warmup_steps
        self.single_sample = single_sample

    def current_limits(self) -> tuple[float, float]:
        """``(rmax, dmax)`` the next training step will use."""
        return renorm_limits(int(self.num_batches_tracked), self.rmax, self.dmax, self.warmup_steps)

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return batch_renorm_forward(self, input, mask)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, rmax={self.rmax}, dmax={self.dmax}, "
            f"warmup_steps={self.warmup_steps}{self._single_sample_repr()}"
        )


class BatchRenorm1d(_BatchRenorm, nn.BatchNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D",
        name="BatchRenorm1d",
        bn="BatchNorm1d",
        shapes="``(N, C)`` or ``(N, C, L)``",
        example="16, 3",
    )
    _ranks = (2, 3)


class BatchRenorm2d(_BatchRenorm, nn.BatchNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D", name="BatchRenorm2d", bn="BatchNorm2d", shapes="``(N, C, H, W)``",
        example="8, 3, 4, 4",
    )  # fmt: skip
    _ranks = (4,)


class BatchRenorm3d(_BatchRenorm, nn.BatchNorm3d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="5D", name="BatchRenorm3d", bn="BatchNorm3d", shapes="``(N, C, D, H, W)``",
        example="4, 3, 2, 4, 4",
    )  # fmt: skip
    _ranks = (5,)
