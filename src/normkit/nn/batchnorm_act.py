"""BatchNormAct1d/2d: batch normalization with a fused activation (timm's layout)."""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.functional import _validate as v
from normkit.functional.batch_norm_act import batch_norm_act
from normkit.nn._base import _NormBase

_DOC_TEMPLATE = r"""Batch normalization followed by an activation, fused, over a {rank} input.

    .. math::
        y = \mathrm{{act}}\left(\gamma \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} + \beta\right)

    The same values and gradients as ``act(nn.{bn}(x))`` but one pass over memory fewer
    each way: the normalization primitives apply the activation (forward) and its
    derivative (backward, recomputed from the input; nothing extra is stored).
    Statistics, ``momentum`` and running-statistics semantics are :class:`normkit.nn.{bn}`'s.

    ``act``: ``"relu"``, ``"leaky_relu"`` (slope ``negative_slope``), ``"silu"``, ``"gelu"``
    (exact erf form, ``torch.nn.GELU()``) or ``"identity"``.

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

    Shape:
        Input and output: {shapes}.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.{name}(3, act="relu")
        >>> bool((layer(torch.randn({example})) >= 0).all())
        True
"""


class _BatchNormAct(_NormBase):
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
    ) -> None:
        v.check_activation(act, negative_slope, type(self).__name__)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.act = act
        self.negative_slope = float(negative_slope)

    def forward(self, input: Tensor) -> Tensor:
        name = self._check_input(input)
        state = self._batch_norm_state()
        return batch_norm_act(
            input,
            state["running_mean"],
            state["running_var"],
            self.weight,
            self.bias,
            state["training"],
            self.momentum,
            self.eps,
            self.act,
            self.negative_slope,
            num_batches_tracked=state["num_batches_tracked"],
            name=name,
        )

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}"


class BatchNormAct1d(_BatchNormAct):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D", name="BatchNormAct1d", bn="BatchNorm1d",
        shapes="``(N, C)`` or ``(N, C, L)``", example="16, 3",
    )  # fmt: skip
    _ranks = (2, 3)


class BatchNormAct2d(_BatchNormAct):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D", name="BatchNormAct2d", bn="BatchNorm2d", shapes="``(N, C, H, W)``",
        example="8, 3, 4, 4",
    )  # fmt: skip
    _ranks = (4,)
