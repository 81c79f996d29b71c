"""LayerNorm and RMSNorm: torch.nn's classes (subclassed), computed by normkit."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from normkit.backends.torch_ops import activation_on_output
from normkit.functional import _validate as v
from normkit.functional.layer_norm import default_rms_eps, normalize_channels, normalize_rows


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
    eps = layer.eps if layer.eps is not None else default_rms_eps(input.dtype)
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
    ``len(normalized_shape)`` dims. ``eps=None`` uses the epsilon of torch's computation dtype
    (``torch.finfo(x.dtype).eps``, float32's for float16/bfloat16), as torch's kernel does.

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


def layer_norm_act_forward(layer: LayerNormAct, input: Tensor) -> Tensor:
    """The forward of LayerNormAct (one FX node)."""
    return activation_on_output(layer_norm_forward(layer, input), layer.act, layer.negative_slope)


torch.fx.wrap("layer_norm_act_forward")


class LayerNormAct(LayerNorm):
    r"""``act(LayerNorm(x))`` over the trailing dims: timm's ``LayerNormAct`` (same state dict:
    ``weight``, ``bias``), the activation given by name as in :class:`normkit.nn.BatchNormAct2d`.

    Args:
        normalized_shape, eps, elementwise_affine, bias: as :class:`normkit.nn.LayerNorm`
            (eps 1e-5, timm's default for this class).
        act: ``"identity"``, ``"relu"``, ``"leaky_relu"``, ``"silu"``, ``"gelu"``,
            ``"relu6"`` or ``"hardswish"``. Default: ``"relu"``
        negative_slope: leaky_relu's slope. Default: 0.01

    Shape:
        Input and output: ``(*, *normalized_shape)``.

    Examples::

        >>> import torch, normkit as nk
        >>> bool((nk.nn.LayerNormAct(6, act="relu")(torch.randn(3, 6)) >= 0).all())
        True
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        act: str = "relu",
        negative_slope: float = 0.01,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        v.check_activation(act, negative_slope, type(self).__name__)
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.act = act
        self.negative_slope = float(negative_slope)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm_act_forward(self, input)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}"


def layer_norm_2d_forward(layer: LayerNorm2d, input: Tensor) -> Tensor:
    """The forward of LayerNorm2d and LayerNormAct2d (one FX node)."""
    name = layer._layer_name()
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    v.check_channels(input, layer.normalized_shape[0], name)
    return normalize_channels(
        input, layer.weight, layer.bias, layer.eps, layer.act, layer.negative_slope, None, name
    )


torch.fx.wrap("layer_norm_2d_forward")


class LayerNorm2d(LayerNorm):
    r"""Layer normalization over the channels of an NCHW input at each position: timm's and
    torchvision's ``LayerNorm2d`` (ConvNeXt), computed without permuting the tensor.

    .. math::
        y_{n,c,h,w} = \frac{x_{n,c,h,w} - \mathrm{E}_c[x_{n,:,h,w}]}
                           {\sqrt{\mathrm{Var}_c[x_{n,:,h,w}] + \epsilon}} \gamma_c + \beta_c

    The same values as ``LayerNorm(C)`` applied to ``x.permute(0, 2, 3, 1)`` and permuted
    back, which is how timm and torchvision compute it, and the same output layout: the
    channels are the fastest dim (channels_last), so the layers after it see what they saw
    after timm's module. A channels_last input is normalized where it lies, as rows of ``C``
    values; any other is first copied into that layout (the copy torch's ``layer_norm``
    makes of the permuted tensor). A subclass of :class:`torch.nn.LayerNorm` with
    ``normalized_shape = (C,)`` and its state dict (``weight``, ``bias`` of size ``C``).

    Args:
        num_channels: ``C``.
        eps: added to the variance. Default: 1e-6 (timm's; torchvision's ConvNeXt passes 1e-6)
        affine: learnable ``weight`` and ``bias``. Default: True
        bias: learn the bias (with ``affine``). Default: True

    Shape:
        Input and output: ``(N, C, H, W)`` (any ``(N, C, *)``); the output is channels_last
        (channel dim fastest), as timm's and torchvision's.

    Examples::

        >>> import torch, normkit as nk
        >>> ln = nk.nn.LayerNorm2d(8)
        >>> y = ln(torch.randn(2, 8, 4, 4) * 3 + 1)
        >>> bool(y.mean(1).abs().max() < 1e-5)
        True
    """

    act = "identity"
    negative_slope = 0.01

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-6,
        affine: bool = True,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        v.check_num_features(num_channels, type(self).__name__, what="num_channels")
        super().__init__(num_channels, eps, affine, bias, device, dtype)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm_2d_forward(self, input)


class LayerNormAct2d(LayerNorm2d):
    r"""``act(LayerNorm2d(x))``: timm's ``LayerNormAct2d`` (same state dict: ``weight``,
    ``bias``), the activation given by name as in :class:`normkit.nn.BatchNormAct2d`.

    Args:
        num_channels: ``C``.
        eps: added to the variance. Default: 1e-5 (timm's for this class)
        affine: learnable ``weight`` and ``bias``. Default: True
        act: ``"identity"``, ``"relu"``, ``"leaky_relu"``, ``"silu"``, ``"gelu"``,
            ``"relu6"`` or ``"hardswish"``. Default: ``"relu"``
        negative_slope: leaky_relu's slope. Default: 0.01

    Shape:
        Input and output: ``(N, C, *)``.

    Examples::

        >>> import torch, normkit as nk
        >>> bool((nk.nn.LayerNormAct2d(4, act="relu")(torch.randn(2, 4, 3, 3)) >= 0).all())
        True
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        act: str = "relu",
        negative_slope: float = 0.01,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        v.check_activation(act, negative_slope, type(self).__name__)
        super().__init__(num_channels, eps, affine, bias=bias, device=device, dtype=dtype)
        self.act = act
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}"
