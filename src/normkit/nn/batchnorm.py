"""BatchNorm1d/2d/3d: torch.nn's classes (subclassed: ``isinstance``, checkpoints, repr and
every utility work as on torch's), computed by normkit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from normkit.functional import _validate as v
from normkit.functional.batch_norm import normalize_per_channel
from normkit.functional.single_sample import one_value_per_channel
from normkit.nn._base import PerChannelLayer, check_per_channel_args
from normkit.nn._single_sample import SingleSamplePolicy, single_sample_forward

_DOC_TEMPLATE = r"""Batch normalization over a {rank} input (`Ioffe & Szegedy 2015
    <https://arxiv.org/abs/1502.03167>`__), a drop-in for :class:`torch.nn.{name}`.

    .. math::
        y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} \cdot \gamma + \beta

    Per channel, over the batch{spatial}. Training normalizes with the batch mean and the
    **biased** batch variance and updates the running estimates with the **unbiased** one::

        running_mean = (1 - momentum) * running_mean + momentum * batch_mean
        running_var  = (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)

    (``momentum=None``: cumulative average, factor ``1 / num_batches_tracked``; note this is
    torch's convention, Keras's ``momentum=0.99`` corresponds to torch's ``0.01``).
    Evaluation normalizes with the running estimates; with ``track_running_stats=False``
    batch statistics are used in both modes. A training batch with NaN/Inf statistics does
    not update the running estimates (a ``RuntimeWarning`` says so; torch would store NaN).

    Args:
        num_features: number of channels ``C``.
        eps: added to the variance. Default: 1e-5
        momentum: running-statistics update factor or ``None``. Default: 0.1
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: True
        track_running_stats: keep ``running_mean``/``running_var``. Default: True
        bias: learn beta (only with ``affine``). Default: True
        single_sample: a training batch with one value per channel (``N * prod(spatial)
            == 1``, where torch raises): ``"error"`` (torch's error), ``"running_stats"``
            (that batch gets the eval-mode output, running statistics untouched) or
            ``"skip_update"`` (batch statistics, so the output is beta; running statistics
            untouched; warns once). Not in the state dict. Default: ``"error"``

    Shape:
        Input and output: {shapes}.{packed}

    Padded batches: ``layer(x, mask=m)`` with a bool ``m`` of shape ``(N, *spatial)`` (x's
    shape without ``C``; True = valid position) takes the statistics from the valid
    positions only and updates the running ones with the valid count ``n``; padded
    positions output exactly 0 and receive 0 gradient. The result equals BatchNorm over the
    valid frames gathered into one ``(n, C)`` batch (``nk.functional.lengths_to_mask``
    builds ``m`` from lengths). Evaluation uses the running statistics, padded outputs 0.

    Parameters: 2C trainable (gamma, beta) and 2C non-trainable values (running mean and
    variance) plus the ``num_batches_tracked`` counter, the same state_dict keys as torch.
    A subclass of :class:`torch.nn.{name}`: ``isinstance`` checks and torch's utilities
    accept it; ``forward`` is normkit's.

    Examples::

        >>> import torch, normkit as nk
        >>> bn = nk.nn.{name}(3)
        >>> x = 5 + 2 * torch.randn({example})
        >>> y = bn(x)
        >>> bool(y.mean().abs() < 1e-5), round(y.var(unbiased=False).item(), 2)
        (True, 1.0)
"""


def batch_norm_forward(
    layer: PerChannelLayer, input: Tensor | PackedSequence, mask: Tensor | None = None
) -> Tensor | PackedSequence:
    """The forward of every normkit BatchNorm layer: input check, torch's statistics policy,
    then the functional core (FX records this call as one node; see :mod:`normkit.nn._base`).
    ``mask``: a padded batch's valid positions; a PackedSequence (BatchNorm1d) is normalized
    over its data, which holds the valid frames only."""
    if isinstance(input, PackedSequence):
        return _packed_forward(layer, input, mask)
    name = layer._check_input(input)
    running_mean, running_var, training, num_batches_tracked = layer._batch_norm_state()
    if training and layer._single_sample != "error" and mask is None:
        if one_value_per_channel(input):
            return single_sample_forward(layer, input, name)
    weight, bias = layer._affine()
    return normalize_per_channel(
        input, running_mean, running_var, weight, bias, training, layer.momentum, layer.eps,
        num_batches_tracked, None, name, mask=mask,
    )  # fmt: skip


def _packed_forward(
    layer: PerChannelLayer, input: PackedSequence, mask: Tensor | None
) -> PackedSequence:
    name = layer._layer_name()
    if 2 not in layer._ranks:
        raise v.NormInputError(
            f"{name}: a PackedSequence (data of size (sum of lengths, C)) is accepted by the "
            f"1-D layers, not by {type(layer).__name__}"
        )
    if mask is not None:
        raise v.NormInputError(
            f"{name}: got a PackedSequence and a mask; a PackedSequence holds only valid "
            "frames, so pass mask=None"
        )
    data = batch_norm_forward(layer, input.data)
    return PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)


torch.fx.wrap("batch_norm_forward")


class _BatchNorm(SingleSamplePolicy, PerChannelLayer):
    """Constructor checks and forward shared by BatchNorm1d/2d/3d (mixed into torch's
    classes; only the accepted input ranks differ)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        single_sample: str = "error",
    ) -> None:
        check_per_channel_args(type(self).__name__, num_features, eps, momentum)
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.single_sample = single_sample

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return batch_norm_forward(self, input, mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._single_sample_repr()

    @classmethod
    def from_keras(
        cls,
        layer_or_config: Any,
        weights: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        eval_only: bool = False,
    ) -> _BatchNorm:
        """This class's twin of a Keras ``BatchNormalization``: :func:`normkit.tools.from_keras`
        with ``dim`` fixed by the class (``BatchNorm2d.from_keras(layer)``: a 4-D layer);
        a layer of another rank is refused. Returns ``normkit.nn.BatchNorm{1,2,3}d``.
        Needs keras only for a Keras layer object (a config and its arrays need none)."""
        from normkit.tools.keras import from_keras  # nn stays importable without tools

        # BatchNorm{d}d takes inputs of rank d + 2 (BatchNorm1d also rank 2)
        dim = max(cls._ranks) - 2
        return from_keras(
            layer_or_config, weights, dim=dim, dtype=dtype, device=device, eval_only=eval_only
        )

    def to_keras(self, *, axis: int = -1, ndim: int | None = None, name: str | None = None) -> Any:
        """A built Keras ``BatchNormalization`` with this layer's state:
        :func:`normkit.tools.to_keras` (needs keras)."""
        from normkit.tools.keras import to_keras  # nn stays importable without tools

        return to_keras(self, axis=axis, ndim=ndim, name=name)


class BatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D",
        name="BatchNorm1d",
        spatial=" (and the length L)",
        shapes="``(N, C)`` or ``(N, C, L)``",
        example="16, 3",
        packed=" A :class:`torch.nn.utils.rnn.PackedSequence` (data ``(sum of lengths, "
        "C)``) comes back as a PackedSequence with the same ``batch_sizes``, normalized over "
        "its frames.",
    )
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm, nn.BatchNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D",
        name="BatchNorm2d",
        spatial=" and the spatial dims (H, W)",
        shapes="``(N, C, H, W)``",
        example="8, 3, 4, 4",
        packed="",
    )
    _ranks = (4,)


class BatchNorm3d(_BatchNorm, nn.BatchNorm3d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="5D",
        name="BatchNorm3d",
        spatial=" and the spatial dims (D, H, W)",
        shapes="``(N, C, D, H, W)``",
        example="4, 3, 2, 4, 4",
        packed="",
    )
    _ranks = (5,)
