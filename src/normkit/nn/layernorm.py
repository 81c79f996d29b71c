"""LayerNorm and RMSNorm: drop-in replacements for torch.nn's, computed by normkit."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.layer_norm import layer_norm, rms_norm
from normkit.nn._base import make_affine, reset_affine


def _shape_tuple(normalized_shape: int | Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    shape = tuple(normalized_shape)
    for size in shape:
        v.check_num_features(size, name, what="each entry of normalized_shape")
    if not shape:
        raise v.NormInputError(f"{name}: normalized_shape must not be empty")
    return shape


class _RowNorm(nn.Module):
    """State shared by LayerNorm and RMSNorm: ``normalized_shape``, ``eps`` and the
    elementwise affine parameters of ``normalized_shape``."""

    __constants__ = ["normalized_shape", "eps", "elementwise_affine"]
    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None,
        elementwise_affine: bool,
        bias: bool,
        factory_kwargs: dict,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.normalized_shape = _shape_tuple(normalized_shape, name)
        if eps is not None:
            v.check_eps(eps, False, name)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        make_affine(self, self.normalized_shape, elementwise_affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_affine(self)

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self.normalized_shape})"


class LayerNorm(_RowNorm):
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
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(normalized_shape, eps, elementwise_affine, bias, factory_kwargs)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(
            input,
            self.normalized_shape,
            self.weight,
            self.bias,
            self.eps,
            name=self._layer_name(),
        )

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )


class RMSNorm(_RowNorm):
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
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(normalized_shape, eps, elementwise_affine, False, factory_kwargs)

    def forward(self, input: Tensor) -> Tensor:
        return rms_norm(
            input,
            self.normalized_shape,
            self.weight,
            self.eps,
            name=self._layer_name(),
        )

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )
