"""LayerNorm and RMSNorm: torch.nn's classes (subclassed), computed by normkit."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.layer_norm import normalize_rows


def _shape_tuple(normalized_shape: int | Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    shape = tuple(normalized_shape)
    for size in shape:
        v.check_num_features(size, name, what="each entry of normalized_shape")
    if not shape:
        raise v.NormInputError(f"{name}: normalized_shape must not be empty")
    return shape


def layer_norm_forward(layer: nn.Module, input: Tensor) -> Tensor:
    """The forward of normkit's LayerNorm (one FX node; see :mod:`normkit.nn._base`)."""
    return normalize_rows(
        input, layer.normalized_shape, layer.weight, layer.bias, layer.eps, True, None,
        layer._layer_name(),
    )  # fmt: skip


def rms_norm_forward(layer: nn.Module, input: Tensor) -> Tensor:
    """The forward of normkit's RMSNorm (one FX node); ``eps=None`` is the dtype's epsilon."""
    name = layer._layer_name()
    v.check_floating(input, name)
    eps = layer.eps if layer.eps is not None else torch.finfo(input.dtype).eps
    return normalize_rows(input, layer.normalized_shape, layer.weight, None, eps, False, None, name)


torch.fx.wrap("layer_norm_forward")
torch.fx.wrap("rms_norm_forward")


class _RowNorm:
    """Constructor checks and the layer name, mixed into torch's LayerNorm and RMSNorm."""

    normalized_shape: tuple[int, ...]

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self.normalized_shape})"


class LayerNorm(_RowNorm, nn.LayerNorm):
    r"""Layer normalization (`Ba et al. 2016 <https://arxiv.org/abs/1607.06450>`__), a drop-in
    for :class:`torch.nn.LayerNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    Statistics per sample over the last ``len(normalized_shape)`` dims (biased variance),
    the same in training and evaluation: no running statistics, independent of the batch
    size (the choice for sequences and small batches).

    Args:
        normalized_shape: trailing shape to normalize over (an int for the last dim).
        eps: added to the variance. Default: 1e-5
        elementwise_affine: learnable ``weight`` (ones) and ``bias`` (zeros) of
            ``normalized_shape``. Default: True
        bias: learn the bias (with ``elementwise_affine``). Default: True

    Shape:
        Input and output: ``(*, *normalized_shape)``.

    Examples::

        >>> import torch, normkit as nk
        >>> ln = nk.nn.LayerNorm(8)
        >>> y = ln(3 + torch.randn(2, 5, 8))
        >>> bool(y.mean(-1).abs().max() < 1e-5)
        True
    """

    eps: float

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        name = type(self).__name__
        shape = _shape_tuple(normalized_shape, name)
        v.check_eps(eps, False, name)
        super().__init__(shape, eps, elementwise_affine, bias, device, dtype)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm_forward(self, input)


class RMSNorm(_RowNorm, nn.RMSNorm):
    r"""Root-mean-square normalization (`Zhang & Sennrich 2019
    <https://arxiv.org/abs/1910.07467>`__), a drop-in for :class:`torch.nn.RMSNorm`.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} \cdot \gamma

    LayerNorm without centering and without bias, over the last
    ``len(normalized_shape)`` dims. ``eps=None`` uses ``torch.finfo(x.dtype).eps``.

    Args:
        normalized_shape: trailing shape to normalize over.
        eps: added to the mean square. Default: None
        elementwise_affine: learnable ``weight`` (ones). Default: True

    Shape:
        Input and output: ``(*, *normalized_shape)``.

    Examples::

        >>> import torch, normkit as nk
        >>> y = nk.nn.RMSNorm(8)(torch.randn(4, 8))
        >>> bool(((y ** 2).mean(-1) - 1).abs().max() < 1e-4)
        True
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        name = type(self).__name__
        shape = _shape_tuple(normalized_shape, name)
        if eps is not None:
            v.check_eps(eps, False, name)
        super().__init__(shape, eps, elementwise_affine, device, dtype)

    def forward(self, input: Tensor) -> Tensor:
        return rms_norm_forward(self, input)
