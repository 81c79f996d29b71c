"""BatchNormAct1d/2d: batch normalization with a fused activation (timm's layout)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.batch_norm import normalize_per_channel
from normkit.functional.single_sample import one_value_per_channel
from normkit.nn._base import PerChannelLayer, check_per_channel_args
from normkit.nn._single_sample import SingleSamplePolicy, single_sample_forward

_DOC_TEMPLATE = r"""Batch normalization followed by an activation, fused, over a {rank} input.

    .. math::
        y = \mathrm{{act}}\left(\gamma \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} + \beta\right)

    The same values and gradients as ``act(nn.{bn}(x))`` but one pass over memory fewer
    each way: the normalization primitives apply the activation (forward) and its
    derivative (backward, recomputed from the input; nothing extra is stored).
    Statistics, ``momentum`` and running-statistics semantics are :class:`normkit.nn.{bn}`'s,
    ``layer(x, mask=m)`` for padded batches included (padded positions output exactly 0).

    ``act``: ``"relu"``, ``"leaky_relu"`` (slope ``negative_slope``), ``"silu"``, ``"gelu"``
    (exact erf form, ``torch.nn.GELU()``), ``"relu6"``, ``"hardswish"`` or ``"identity"``.

    State dict: exactly BatchNorm's keys (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``), the layout of timm's ``BatchNormAct2d``
    (whose ``act``/``drop`` submodules hold no state), so timm and torch checkpoints load.

    Args:
        num_features: number of channels ``C``.
        act: the activation's name. Default: ``"relu"``
        eps: added to the variance. Default: 1e-5
        momentum: running-statistics factor, or ``None`` (cumulative average). Default: 0.1
        affine: learnable ``weight`` and ``bias``. Default: True
        negative_slope: leaky_relu's slope (keyword). Default: 0.01
        track_running_stats: keep running statistics (keyword). Default: True
        single_sample: a training batch with one value per channel (keyword): as
            :class:`normkit.nn.{bn}`'s, then the activation (``"skip_update"``:
            ``act(beta)``). Default: ``"error"``

    Shape:
        Input and output: {shapes}.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.{name}(3, act="relu")
        >>> bool((layer(torch.randn({example})) >= 0).all())
        True
"""


def batch_norm_act_forward(
    layer: _BatchNormAct, input: Tensor, mask: Tensor | None = None
) -> Tensor:
    """The forward of the BatchNormAct layers (one FX node; see :mod:`normkit.nn._base`);
    ``mask``: a padded batch's valid positions."""
    name = layer._check_input(input)
    running_mean, running_var, training, num_batches_tracked = layer._batch_norm_state()
    if training and layer._single_sample != "error" and mask is None:
        if one_value_per_channel(input):
            return single_sample_forward(layer, input, name, layer.act, layer.negative_slope)
    weight, bias = layer._affine()
    return normalize_per_channel(
        input, running_mean, running_var, weight, bias, training, layer.momentum, layer.eps,
        num_batches_tracked, None, name, layer.act, layer.negative_slope, mask,
    )  # fmt: skip


torch.fx.wrap("batch_norm_act_forward")


class _BatchNormAct(SingleSamplePolicy, PerChannelLayer):
    """Mixed into torch's BatchNorm classes, as timm's BatchNormAct2d is."""

    act: str
    negative_slope: float

    def __init__(
        self,
        num_features: int,
        act: str = "relu",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        *,
        negative_slope: float = 0.01,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        single_sample: str = "error",
    ) -> None:
        name = type(self).__name__
        check_per_channel_args(name, num_features, eps, momentum)
        v.check_activation(act, negative_slope, name)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.act = act
        self.negative_slope = float(negative_slope)
        self.single_sample = single_sample

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return batch_norm_act_forward(self, input, mask)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}{self._single_sample_repr()}"


class BatchNormAct1d(_BatchNormAct, nn.BatchNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D", name="BatchNormAct1d", bn="BatchNorm1d",
        shapes="``(N, C)`` or ``(N, C, L)``", example="16, 3",
    )  # fmt: skip
    _ranks = (2, 3)


class BatchNormAct2d(_BatchNormAct, nn.BatchNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D", name="BatchNormAct2d", bn="BatchNorm2d", shapes="``(N, C, H, W)``",
        example="8, 3, 4, 4",
    )  # fmt: skip
    _ranks = (4,)


class FusedActivation(nn.Identity):
    """Where an activation module stood once ``nk.tools.convert`` fused it into the norm layer
    before it (``into``): passes its input through. Keeps the activation it replaced
    (``source``), so ``convert(model, "torch")`` puts it back. No state of its own.

    Examples::

        >>> import torch, normkit as nk
        >>> marker = nk.nn.FusedActivation(torch.nn.ReLU(inplace=True), into="features.1")
        >>> marker
        FusedActivation(ReLU(inplace=True), into='features.1')
    """

    def __init__(self, source: nn.Module, into: str) -> None:
        super().__init__()
        object.__setattr__(self, "source", source)  # not a submodule: no state, no hooks
        self.into = into

    def extra_repr(self) -> str:
        return f"{self.source!r}, into={self.into!r}"
