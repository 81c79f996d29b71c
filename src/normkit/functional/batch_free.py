"""The batch-free and response norms, stateless: FilterResponseNorm, EvoNorm-B0, EvoNorm-S0,
GlobalResponseNorm and the channel RMS norm of NCHW maps (timm's formulas and eps
conventions; :mod:`normkit.reference_batch_free` writes each one out).

Each public function validates its arguments and calls a validated core
(``normalize_filter_response``, ``normalize_evo_b0``, ``normalize_evo_s0``,
``normalize_global_response``, ``normalize_rms_2d``: what the layers call), which picks the
implementation with :func:`normkit.backends.select`. Statistics are computed in the input's
precision (float64 for float64 inputs, where timm reduces FRN and EvoNorm inputs in
float32; float32 for float16/bfloat16).
"""

from __future__ import annotations

from torch import Tensor

from normkit.backends import select
from normkit.functional import _validate as check

_LAYOUT = "(N, C, *) with at least one spatial dimension"
_LAYOUT_LAST = "(N, *, C) with at least one spatial dimension"


def _check_input(input: Tensor, name: str, layout: str = _LAYOUT) -> None:
    """A floating input with at least one spatial dimension."""
    check.check_floating(input, name)
    check.check_min_rank(input, 3, name, layout)


def _check_vectors(channels: int, name: str, **vectors: Tensor | None) -> None:
    for what, t in vectors.items():
        check.check_vector(t, channels, what, name)


def channel_affine(input: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``x * w + b`` per channel of ``x (N, C, *)``: what timm's EvoNorm-B0/S0 layers compute
    with ``apply_act=False`` (no normalization at all)."""
    shape = (-1, *(1,) * (input.dim() - 2))
    if weight is not None:
        input = input * weight.to(input.dtype).reshape(shape)
    if bias is not None:
        input = input + bias.to(input.dtype).reshape(shape)
    return input


# ---------------------------------------------------------------------------------------
# FilterResponseNorm.


def filter_response_norm(
    input: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    tau: Tensor | None = None,
    eps: float = 1e-5,
    act: str = "identity",
    negative_slope: float = 0.01,
    *,
    backend: str | None = None,
    name: str = "filter_response_norm",
) -> Tensor:
    r"""Filter response normalization (`Singh & Krishnan 2020
    <https://arxiv.org/abs/1911.09737>`__): each ``(n, c)`` plane divided by its root mean
    square (no centering), then the thresholded linear unit or an activation.

    .. math::
        z = \frac{x}{\sqrt{\nu^2 + \epsilon}} \gamma + \beta,\quad
        \nu^2 = \mathrm{mean}_{HW}(x^2);\qquad
        y = \max(z, \tau)\ \text{(TLU)}\quad\text{or}\quad y = \mathrm{act}(z)

    ``tau`` (the TLU's learned threshold) and ``act`` exclude each other. ``act``: one of
    the fused activations of :func:`~normkit.functional.batch_norm_act`. Independent of the
    batch: training and evaluation compute the same thing.

    Shape: ``(N, C, *)`` with at least one spatial dim; output the same.
    """
    _check_input(input, name)
    _check_vectors(input.shape[1], name, weight=weight, bias=bias, tau=tau)
    check.check_eps(eps, False, name)
    check.check_activation(act, negative_slope, name)
    if tau is not None and act != "identity":
        raise check.NormInputError(
            f"{name}: tau (the TLU) and act={act!r} exclude each other; pass one of them"
        )
    return normalize_filter_response(
        input, weight, bias, tau, eps, act, negative_slope, backend, name
    )


def normalize_filter_response(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    tau: Tensor | None,
    eps: float,
    act: str,
    negative_slope: float,
    backend: str | None,
    name: str,
) -> Tensor:
    """FilterResponseNorm on validated arguments (what the layers call)."""
    impl = select("filter_response_norm", input, backend)
    return impl(input, weight, bias, tau, eps, act, negative_slope)


# ---------------------------------------------------------------------------------------
# EvoNorm-B0.


def check_b0_momentum(momentum: float, name: str) -> None:
    """EvoNorm-B0's momentum: a number in [0, 1] (no ``None``: there is no batch count)."""
    if (
        not isinstance(momentum, (int, float))
        or isinstance(momentum, bool)
        or not 0.0 <= momentum <= 1.0
    ):
        raise check.NormInputError(
            f"{name}: momentum must be a number in [0, 1] (EvoNorm-B0 keeps no batch count, "
            f"so there is no cumulative average), got {momentum!r}"
        )


def evo_norm_b0(
    input: Tensor,
    running_var: Tensor | None,
    v: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-3,
    *,
    backend: str | None = None,
    name: str = "evo_norm_b0",
) -> Tensor:
    r"""EvoNorm-B0 (`Liu et al. 2020 <https://arxiv.org/abs/2004.02967>`__): the batch std
    against a learned, input-dependent instance term, inside a max.

    .. math::
        y = \frac{x}{\max\left(\sqrt{\sigma^2_b + \epsilon},\
            v x + \sqrt{\sigma^2_i + \epsilon}\right)} \gamma + \beta

    ``sigma2_b``: in training the biased variance of each channel over ``(N, *)``
    (differentiated through), and ``running_var`` (if given) moves towards its unbiased
    value, ``running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)``
    (``n = N * prod(*)``; a batch with NaN/Inf statistics leaves it unchanged, with a
    :class:`~normkit.functional.NonFiniteStatisticsWarning`); in evaluation
    ``running_var``. ``sigma2_i``: the variance of each ``(n, c)`` plane.

    Shape: ``(N, C, *)`` with at least one spatial dim; output the same.
    """
    _check_input(input, name)
    if v is None:
        raise check.NormInputError(
            f"{name}: v is required (without it timm's EvoNorm2dB0 is only x * weight + "
            "bias: use channel_affine)"
        )
    channels = input.shape[1]
    _check_vectors(channels, name, running_var=running_var, v=v, weight=weight, bias=bias)
    check.check_eps(eps, False, name)
    if training:
        check_b0_momentum(momentum, name)
    elif running_var is None:
        raise check.NormInputError(
            f"{name}: running_var must be given in evaluation (training=False), got None"
        )
    return normalize_evo_b0(
        input, running_var, v, weight, bias, training, momentum, eps, backend, name
    )


def normalize_evo_b0(
    input: Tensor,
    running_var: Tensor | None,
    v: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    backend: str | None,
    name: str,
) -> Tensor:
    """EvoNorm-B0 on validated arguments (what the layer calls)."""
    if not training:
        impl = select("evo_norm_b0_eval", input, backend)
        return impl(input, v, weight, bias, running_var, eps)
    if running_var is not None:
        check.check_more_than_one_value_per_channel(input, name)
    impl = select("evo_norm_b0_train", input, backend)
    return impl(input, v, weight, bias, running_var, momentum, eps, name)


# ---------------------------------------------------------------------------------------
# EvoNorm-S0 and S0a.


def evo_norm_s0(
    input: Tensor,
    groups: int = 32,
    v: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    backend: str | None = None,
    name: str = "evo_norm_s0",
) -> Tensor:
    r"""EvoNorm-S0 (`Liu et al. 2020 <https://arxiv.org/abs/2004.02967>`__): a SiLU-style
    gate divided by the group std; batch-free.

    .. math::
        y = \frac{x\,\sigma(v x)}{\sqrt{\sigma^2_g + \epsilon}} \gamma + \beta

    ``sigma2_g``: the biased variance of ``x`` over each sample's group of ``C / groups``
    channels and the spatial positions (taken before the gate). ``v=None``: no gate,
    ``y = x / sqrt(sigma2_g + eps) * gamma + beta`` (timm's EvoNorm2dS0a with
    ``apply_act=False``; timm's default eps is 1e-5 for S0, 1e-3 for S0a).

    Shape: ``(N, C, *)`` with at least one spatial dim, ``C`` a multiple of ``groups``.
    """
    _check_input(input, name)
    channels = input.shape[1]
    check.check_groups(channels, groups, name)
    _check_vectors(channels, name, v=v, weight=weight, bias=bias)
    check.check_eps(eps, False, name)
    return normalize_evo_s0(input, groups, v, weight, bias, eps, backend, name)


def normalize_evo_s0(
    input: Tensor,
    groups: int,
    v: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    backend: str | None,
    name: str,
) -> Tensor:
    """EvoNorm-S0 on validated arguments (what the layers call)."""
    check.check_groups(input.shape[1], groups, name)
    return select("evo_norm_s0", input, backend)(input, groups, v, weight, bias, eps)


# ---------------------------------------------------------------------------------------
# GlobalResponseNorm.


def global_response_norm(
    input: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-6,
    channels_last: bool = False,
    *,
    backend: str | None = None,
    name: str = "global_response_norm",
) -> Tensor:
    r"""Global response normalization (ConvNeXt-V2, `Woo et al. 2023
    <https://arxiv.org/abs/2301.00808>`__): each channel's L2 norm over the spatial
    positions, relative to its mean over the channels, scales a residual update.

    .. math::
        g_c = \lVert x_c \rVert_2,\quad n_c = \frac{g_c}{\mathrm{mean}_c(g) + \epsilon},
        \quad y = x + (\gamma\,(x\, n) + \beta)

    ``eps`` is added to the mean of the norms (no square root around it). ``weight`` and
    ``bias`` absent count as zero (the identity, as a fresh layer). ``channels_last``: the
    channels are the last dim, ``(N, *, C)`` (timm's default for the layer).

    Shape: ``(N, C, *)``, or ``(N, *, C)`` with ``channels_last``; output the same.
    """
    _check_input(input, name, _LAYOUT_LAST if channels_last else _LAYOUT)
    channels = input.shape[-1] if channels_last else input.shape[1]
    _check_vectors(channels, name, weight=weight, bias=bias)
    check.check_eps(eps, False, name)
    return normalize_global_response(input, weight, bias, eps, channels_last, backend, name)


def normalize_global_response(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    channels_last: bool,
    backend: str | None,
    name: str,
) -> Tensor:
    """GlobalResponseNorm on validated arguments (what the layer calls)."""
    impl = select("global_response_norm", input, backend)
    return impl(input, weight, bias, eps, bool(channels_last))


# ---------------------------------------------------------------------------------------
# RmsNorm2d.


def rms_norm2d(
    input: Tensor,
    weight: Tensor | None = None,
    eps: float = 1e-6,
    *,
    backend: str | None = None,
    name: str = "rms_norm2d",
) -> Tensor:
    r"""RMS normalization over the channels of an NCHW map, at each spatial position
    (timm's ``RmsNorm2d``: RMSNorm on ``dim=1`` without permuting).

    .. math::
        y = \frac{x}{\sqrt{\mathrm{mean}_C(x^2) + \epsilon}} \gamma

    Shape: ``(N, C, *)`` with at least one spatial dim; output the same.
    """
    _check_input(input, name)
    _check_vectors(input.shape[1], name, weight=weight)
    check.check_eps(eps, False, name)
    return normalize_rms_2d(input, weight, eps, backend, name)


def normalize_rms_2d(
    input: Tensor, weight: Tensor | None, eps: float, backend: str | None, name: str
) -> Tensor:
    """RmsNorm2d on validated arguments (what the layer calls)."""
    return select("rms_norm2d", input, backend)(input, weight, eps)
