"""Batch-free and response norms with timm's classes' names, constructor arguments,
attributes, initial values and state dicts: FilterResponseNormTlu2d, FilterResponseNormAct2d,
EvoNorm2dB0, EvoNorm2dS0, EvoNorm2dS0a (``timm.layers.evo_norm``,
``timm.layers.filter_response_norm``), GlobalResponseNorm (``timm.layers.grn``) and
RmsNorm2d (``timm.layers.norm``), computed by normkit's kernels.

timm's classes are plain ``nn.Module`` subclasses, and so are these (no torch class to
subclass). A timm checkpoint loads strictly, and back. Differences from timm, on purpose:

* statistics in the input's precision: timm reduces FRN and EvoNorm inputs in float32 even
  for float64 (``x.float()``), normkit in float64;
* EvoNorm2dB0's running variance is updated by normkit's guarded rule: a batch with
  NaN/Inf statistics leaves it unchanged (with a ``NonFiniteStatisticsWarning``) where
  timm stores NaN;
* bad input raises an error naming the layer, what was expected and what came (timm:
  an assertion, or a shape error from inside the computation).

Formulas: :mod:`normkit.reference_batch_free`. Every ``forward`` is one call to a
module-level function registered with ``torch.fx.wrap`` (one FX node per layer).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from normkit.functional import _validate as check
from normkit.functional.batch_free import (
    channel_affine,
    check_b0_momentum,
    normalize_evo_b0,
    normalize_evo_s0,
    normalize_filter_response,
    normalize_global_response,
    normalize_rms_2d,
)
from normkit.nn._activations import ACTIVATION_CLASSES, fused_activation

__all__ = [
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "FilterResponseNormAct2d",
    "FilterResponseNormTlu2d",
    "GlobalResponseNorm",
    "RmsNorm2d",
]


def _supported_acts() -> str:
    return ", ".join(sorted(ACTIVATION_CLASSES)) + ", or the torch.nn classes of these"


def _create_act(
    act_layer: str | Callable[..., nn.Module], inplace: bool | None, name: str
) -> nn.Module:
    """The activation module of ``act_layer`` (a name or a class), built as timm builds it:
    ``inplace`` is passed only when not None, and dropped for classes without it."""
    if isinstance(act_layer, str):
        cls = ACTIVATION_CLASSES.get(act_layer.lower())
        if cls is None:
            raise check.NormInputError(
                f"{name}: act_layer={act_layer!r} is not an activation normkit fuses; "
                f"expected one of {_supported_acts()}"
            )
    else:
        cls = act_layer
    if inplace is None:
        return cls()
    try:
        return cls(inplace=inplace)
    except TypeError:  # no ``inplace`` argument (nn.GELU, nn.Identity)
        return cls()


# ---------------------------------------------------------------------------------------
# Forwards (one FX node each).


def filter_response_norm_forward(layer: nn.Module, input: Tensor) -> Tensor:
    """The forward of FilterResponseNormTlu2d and FilterResponseNormAct2d."""
    name = layer._check_input(input)
    tau = getattr(layer, "tau", None)
    act, slope = ("identity", 0.01) if tau is not None else layer._activation(name)
    return normalize_filter_response(
        input, layer.weight, layer.bias, tau, layer.eps, act, slope, None, name
    )


def evo_norm_b0_forward(layer: EvoNorm2dB0, input: Tensor) -> Tensor:
    """The forward of EvoNorm2dB0 (only the affine without ``v``, as timm's)."""
    name = layer._check_input(input)
    if layer.v is None:
        return channel_affine(input, layer.weight, layer.bias)
    return normalize_evo_b0(
        input, layer.running_var, layer.v, layer.weight, layer.bias, layer.training,
        layer.momentum, layer.eps, None, name,
    )  # fmt: skip


def evo_norm_s0_forward(layer: EvoNorm2dS0, input: Tensor) -> Tensor:
    """The forward of EvoNorm2dS0 (only the affine without ``v``) and EvoNorm2dS0a (the
    group-std division always, the gate only with ``v``)."""
    name = layer._check_input(input)
    if layer.v is None and not layer._normalizes_without_act:
        return channel_affine(input, layer.weight, layer.bias)
    return normalize_evo_s0(
        input, layer.groups, layer.v, layer.weight, layer.bias, layer.eps, None, name
    )


def global_response_norm_forward(layer: GlobalResponseNorm, input: Tensor) -> Tensor:
    """The forward of GlobalResponseNorm."""
    name = layer._check_input(input)
    channels_last = layer.channel_dim == -1
    return normalize_global_response(
        input, layer.weight, layer.bias, layer.eps, channels_last, None, name
    )


def rms_norm2d_forward(layer: RmsNorm2d, input: Tensor) -> Tensor:
    """The forward of RmsNorm2d."""
    name = layer._check_input(input)
    return normalize_rms_2d(input, layer.weight, layer.eps, None, name)


torch.fx.wrap("filter_response_norm_forward")
torch.fx.wrap("evo_norm_b0_forward")
torch.fx.wrap("evo_norm_s0_forward")
torch.fx.wrap("global_response_norm_forward")
torch.fx.wrap("rms_norm2d_forward")


# ---------------------------------------------------------------------------------------
# Layers.


class _BatchFree(nn.Module):
    """The input check and layer name every class here shares (4-D input, channels at
    ``_channel_dim``)."""

    _channel_dim = 1

    def _channels(self) -> int:
        return self.weight.shape[0]

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self._channels()})"

    def _check_input(self, input: Tensor) -> str:
        name = self._layer_name()
        check.check_floating(input, name)
        check.check_rank(input, (4,), name)
        check.check_channels(input, self._channels(), name, self._channel_dim % 4)
        return name


def _affine_parameters(module: nn.Module, num_features: int, factory: dict) -> None:
    check.check_num_features(num_features, type(module).__name__)
    module.weight = nn.Parameter(torch.empty(num_features, **factory))
    module.bias = nn.Parameter(torch.empty(num_features, **factory))


class FilterResponseNormTlu2d(_BatchFree):
    r"""Filter response normalization with the thresholded linear unit (`Singh & Krishnan
    2020 <https://arxiv.org/abs/1911.09737>`__), timm's ``FilterResponseNormTlu2d``.

    .. math::
        y = \max\left(\frac{x}{\sqrt{\mathrm{mean}_{HW}(x^2) + \epsilon}}\,\gamma + \beta,\
            \tau\right)

    Per ``(n, c)`` plane, no centering, no batch statistics (training and evaluation are
    the same). ``apply_act=False``: no ``tau`` and no TLU.

    Args:
        num_features: channels ``C``.
        apply_act: the TLU with a learned ``tau`` (zeros). Default: True
        eps: added to the mean square. Default: 1e-5
        rms: stored, unused (timm's attribute). Default: True

    Other keyword arguments are accepted and ignored, as timm's class does.

    State dict: ``weight`` (ones), ``bias`` (zeros), ``tau`` (zeros; with ``apply_act``).

    Shape:
        Input and output: ``(N, C, H, W)``.

    Examples::

        >>> import torch, normkit as nk
        >>> frn = nk.nn.FilterResponseNormTlu2d(8)
        >>> bool((frn(torch.randn(2, 8, 5, 5)) >= 0).all())   # tau = 0: a ReLU-like floor
        True
    """

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        eps: float = 1e-5,
        rms: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        check.check_eps(eps, False, type(self).__name__)
        self.apply_act = apply_act
        self.rms = rms
        self.eps = eps
        _affine_parameters(self, num_features, factory)
        self.tau = nn.Parameter(torch.empty(num_features, **factory)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.tau is not None:
            nn.init.zeros_(self.tau)

    def _activation(self, name: str) -> tuple[str, float]:
        return "identity", 0.01

    def forward(self, input: Tensor) -> Tensor:
        return filter_response_norm_forward(self, input)


class FilterResponseNormAct2d(_BatchFree):
    r"""Filter response normalization followed by an activation, fused, timm's
    ``FilterResponseNormAct2d``.

    .. math::
        y = \mathrm{act}\left(\frac{x}{\sqrt{\mathrm{mean}_{HW}(x^2) + \epsilon}}\,\gamma
            + \beta\right)

    ``act`` is the module timm's class holds (``self.act``, built from ``act_layer`` and
    ``inplace`` as timm builds it; ``nn.Identity`` with ``apply_act=False`` or
    ``act_layer=None``); normkit computes it inside the kernel, so it must be one normkit
    fuses: ReLU, LeakyReLU, SiLU, GELU (exact), ReLU6, Hardswish or Identity (see
    :func:`fused_activation`).

    Args:
        num_features: channels ``C``.
        apply_act: apply the activation. Default: True
        act_layer: an activation class or name. Default: ``nn.ReLU``
        inplace: passed to the activation's constructor when not None. Default: None
        rms: stored, unused (timm's attribute). Default: True
        eps: added to the mean square. Default: 1e-5

    State dict: ``weight`` (ones), ``bias`` (zeros).

    Shape:
        Input and output: ``(N, C, H, W)``.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.FilterResponseNormAct2d(8, act_layer=torch.nn.SiLU)
        >>> layer(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        act_layer: str | Callable[..., nn.Module] | None = nn.ReLU,
        inplace: bool | None = None,
        rms: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        factory = {"device": device, "dtype": dtype}
        check.check_eps(eps, False, name)
        if act_layer is not None and apply_act:
            self.act = _create_act(act_layer, inplace, name)
        else:
            self.act = nn.Identity()
        if fused_activation(self.act) is None:
            raise check.NormInputError(
                f"{name}: the activation {self.act!r} is not one normkit fuses; expected "
                f"one of {_supported_acts()}"
            )
        self.rms = rms
        self.eps = eps
        _affine_parameters(self, num_features, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def _activation(self, name: str) -> tuple[str, float]:
        fused = fused_activation(self.act)
        if fused is None:
            raise check.NormInputError(
                f"{name}: the activation {self.act!r} is not one normkit fuses; expected "
                f"one of {_supported_acts()}"
            )
        return fused

    def forward(self, input: Tensor) -> Tensor:
        return filter_response_norm_forward(self, input)


class EvoNorm2dB0(_BatchFree):
    r"""EvoNorm-B0 (`Liu et al. 2020 <https://arxiv.org/abs/2004.02967>`__), timm's
    ``EvoNorm2dB0``: the batch std against an input-dependent instance term.

    .. math::
        y = \frac{x}{\max\left(\sqrt{\sigma^2_b + \epsilon},\
            v x + \sqrt{\sigma^2_i + \epsilon}\right)}\,\gamma + \beta

    ``sigma2_b``: in training the biased variance of each channel over ``(N, H, W)``, and
    ``running_var = (1 - momentum) * running_var + momentum * sigma2_b * n / (n - 1)``
    (``n = N * H * W``; only the variance is tracked, no batch count); in evaluation
    ``running_var``. ``sigma2_i``: each ``(n, c)`` plane's variance. With
    ``apply_act=False`` there is no ``v`` and the layer is only ``x * weight + bias`` (no
    normalization), as timm's.

    Args:
        num_features: channels ``C``.
        apply_act: normalize, with a learned ``v`` (ones). Default: True
        momentum: running-variance factor (torch's convention). Default: 0.1
        eps: added to both variances. Default: 1e-3

    Other keyword arguments are accepted and ignored, as timm's class does.

    State dict: ``weight`` (ones), ``bias`` (zeros), ``v`` (ones, with ``apply_act``),
    buffer ``running_var`` (ones).

    Shape:
        Input and output: ``(N, C, H, W)``.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.EvoNorm2dB0(8)
        >>> _ = layer(torch.randn(4, 8, 5, 5) * 3)    # training: moves running_var
        >>> bool((layer.running_var > 1).all())
        True
    """

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        factory = {"device": device, "dtype": dtype}
        check.check_eps(eps, False, name)
        if apply_act:  # without v the layer is an affine and never reads momentum
            check_b0_momentum(momentum, name)
        self.apply_act = apply_act
        self.momentum = momentum
        self.eps = eps
        _affine_parameters(self, num_features, factory)
        self.v = nn.Parameter(torch.empty(num_features, **factory)) if apply_act else None
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def forward(self, input: Tensor) -> Tensor:
        return evo_norm_b0_forward(self, input)


def _groups_of(num_features: int, groups: int, group_size: int | None, name: str) -> int:
    """timm's rule: ``group_size`` (channels per group), when given, decides."""
    if group_size:
        if num_features % group_size:
            raise check.NormInputError(
                f"{name}: num_features={num_features} is not a multiple of group_size={group_size}"
            )
        return num_features // group_size
    return groups


class EvoNorm2dS0(_BatchFree):
    r"""EvoNorm-S0 (`Liu et al. 2020 <https://arxiv.org/abs/2004.02967>`__), timm's
    ``EvoNorm2dS0``: a SiLU-style gate over the group std; batch-free.

    .. math::
        y = \frac{x\,\sigma(v x)}{\sqrt{\sigma^2_g + \epsilon}}\,\gamma + \beta

    ``sigma2_g``: the biased variance of ``x`` over each sample's group of channels and
    positions. ``groups`` (default 32) or ``group_size`` (channels per group, which wins);
    ``C`` must be a multiple of the group count when the layer normalizes. With
    ``apply_act=False``: no ``v``, and only ``x * weight + bias``, as timm's.

    Args:
        num_features: channels ``C``.
        groups: number of groups. Default: 32
        group_size: channels per group (instead of ``groups``). Default: None
        apply_act: normalize and gate, with a learned ``v`` (ones). Default: True
        eps: added to the group variance. Default: 1e-5

    Other keyword arguments are accepted and ignored, as timm's class does.

    State dict: ``weight`` (ones), ``bias`` (zeros), ``v`` (ones, with ``apply_act``).

    Shape:
        Input and output: ``(N, C, H, W)``.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.EvoNorm2dS0(64, groups=8)
        >>> layer(torch.randn(1, 64, 5, 5)).shape     # batch-free: any batch size
        torch.Size([1, 64, 5, 5])
    """

    _normalizes_without_act = False

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        factory = {"device": device, "dtype": dtype}
        check.check_eps(eps, False, name)
        self.apply_act = apply_act
        self.groups = _groups_of(num_features, groups, group_size, name)
        self.eps = eps
        _affine_parameters(self, num_features, factory)
        self.v = nn.Parameter(torch.empty(num_features, **factory)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def forward(self, input: Tensor) -> Tensor:
        return evo_norm_s0_forward(self, input)


class EvoNorm2dS0a(EvoNorm2dS0):
    r"""timm's ``EvoNorm2dS0a``: EvoNorm-S0 with eps 1e-3 whose group-std division also
    applies with ``apply_act=False``.

    .. math::
        y = \frac{x\,\sigma(v x)}{\sqrt{\sigma^2_g + \epsilon}}\,\gamma + \beta
        \qquad\text{or, without } v:\qquad
        y = \frac{x}{\sqrt{\sigma^2_g + \epsilon}}\,\gamma + \beta

    The group statistics are those of the input before the gate (the same as S0's).
    Arguments, state dict and shapes: :class:`EvoNorm2dS0`'s (eps default 1e-3).

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.EvoNorm2dS0a(16, groups=4, apply_act=False)
        >>> y = layer(3 * torch.randn(2, 16, 4, 4))
        >>> bool(y.std() < 1.5)                        # divided by the group std
        True
    """

    _normalizes_without_act = True

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        eps: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: object,
    ) -> None:
        super().__init__(
            num_features, groups=groups, group_size=group_size, apply_act=apply_act, eps=eps,
            device=device, dtype=dtype,
        )  # fmt: skip


class GlobalResponseNorm(_BatchFree):
    r"""Global response normalization (ConvNeXt-V2, `Woo et al. 2023
    <https://arxiv.org/abs/2301.00808>`__), timm's ``GlobalResponseNorm``.

    .. math::
        g_c = \lVert x_c \rVert_{2,HW},\quad n_c = \frac{g_c}{\mathrm{mean}_c(g) + \epsilon},
        \quad y = x + (\gamma\,(x\,n) + \beta)

    ``eps`` is added to the mean of the norms, not under a square root. ``weight`` and
    ``bias`` start at zero, so a fresh layer is the identity. ``channels_last=True`` (the
    default, ConvNeXt-V2's MLP) takes ``(N, H, W, C)``; ``False`` takes ``(N, C, H, W)``.
    Attributes ``spatial_dim``, ``channel_dim``, ``wb_shape`` are timm's.

    Args:
        dim: channels ``C``.
        eps: added to the mean of the norms. Default: 1e-6
        channels_last: channels in the last dim. Default: True

    State dict: ``weight``, ``bias`` (zeros).

    Shape:
        Input and output: ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``channels_last=False``.

    Examples::

        >>> import torch, normkit as nk
        >>> grn = nk.nn.GlobalResponseNorm(8)
        >>> x = torch.randn(2, 5, 5, 8)
        >>> torch.equal(grn(x), x)                      # zero weight and bias: the identity
        True
    """

    def __init__(
        self,
        dim: int,
        eps: float = 1e-6,
        channels_last: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        factory = {"device": device, "dtype": dtype}
        check.check_num_features(dim, name, what="dim")
        check.check_eps(eps, False, name)
        self.eps = eps
        if channels_last:
            self.spatial_dim = (1, 2)
            self.channel_dim = -1
            self.wb_shape = (1, 1, 1, -1)
        else:
            self.spatial_dim = (2, 3)
            self.channel_dim = 1
            self.wb_shape = (1, -1, 1, 1)
        self.weight = nn.Parameter(torch.zeros(dim, **factory))
        self.bias = nn.Parameter(torch.zeros(dim, **factory))

    @property
    def _channel_dim(self) -> int:  # type: ignore[override]
        return self.channel_dim

    def forward(self, input: Tensor) -> Tensor:
        return global_response_norm_forward(self, input)


class RmsNorm2d(_BatchFree):
    r"""RMS normalization over the channels of an NCHW map, timm's ``RmsNorm2d``.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{mean}_C(x^2) + \epsilon}}\,\gamma

    At each ``(n, h, w)`` over the ``C`` channels, computed on NCHW directly (no permute;
    channels_last inputs stay channels_last). Attributes ``normalized_shape`` (a 1-tuple),
    ``eps``, ``elementwise_affine`` are timm's.

    Args:
        channels: ``C`` (an int or a one-element sequence).
        eps: added to the mean square. Default: 1e-6
        affine: learnable ``weight`` (ones). Default: True

    State dict: ``weight`` (with ``affine``).

    Shape:
        Input and output: ``(N, C, H, W)``.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.RmsNorm2d(16)
        >>> y = layer(torch.randn(2, 16, 3, 3))
        >>> bool(torch.allclose(y.pow(2).mean(1), torch.ones(2, 3, 3), atol=1e-4))
        True
    """

    def __init__(
        self,
        channels: int | Sequence[int],
        eps: float = 1e-6,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        shape = (channels,) if isinstance(channels, numbers.Integral) else tuple(channels)
        if len(shape) != 1:
            raise check.NormInputError(
                f"{name}: normalized_shape must have one entry (the channels), got {shape}"
            )
        check.check_num_features(shape[0], name, what="channels")
        check.check_eps(eps, False, name)
        self.normalized_shape = (int(shape[0]),)
        self.eps = eps
        self.elementwise_affine = affine
        if affine:
            self.weight = nn.Parameter(
                torch.empty(self.normalized_shape, device=device, dtype=dtype)
            )
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.ones_(self.weight)

    def _channels(self) -> int:
        return self.normalized_shape[0]

    def forward(self, input: Tensor) -> Tensor:
        return rms_norm2d_forward(self, input)
