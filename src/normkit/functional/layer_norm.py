"""Layer normalization and RMS normalization, stateless (torch.nn.functional's API)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from normkit._shared import accumulation_dtype
from normkit.backends import select
from normkit.backends.torch_ops import activation_on_output
from normkit.functional import _validate as v


def _normalized_tuple(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


def _row_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    center: bool,
    backend: str | None,
    name: str,
) -> Tensor:
    shape = _normalized_tuple(normalized_shape)
    v.check_param_shape(weight, shape, "weight", name)
    v.check_param_shape(bias, shape, "bias", name)
    v.check_eps(eps, False, name)
    return normalize_rows(input, shape, weight, bias, eps, center, backend, name)


def normalize_rows(
    input: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    center: bool,
    backend: str | None,
    name: str,
) -> Tensor:
    """LayerNorm (``center``) or RMSNorm on validated parameters (what the layers call)."""
    v.check_floating(input, name)
    v.check_normalized_shape(input, normalized_shape, name)
    if center:
        return select("layer_norm", input, backend)(input, normalized_shape, weight, bias, eps)
    return select("rms_norm", input, backend)(input, normalized_shape, weight, eps)


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    backend: str | None = None,
    name: str = "layer_norm",
) -> Tensor:
    r"""Layer normalization over the trailing ``normalized_shape`` dims
    (`Ba et al. 2016 <https://arxiv.org/abs/1607.06450>`__).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    Statistics per sample (each leading index) over the last ``len(normalized_shape)``
    dims, biased variance; ``weight``/``bias`` have shape ``normalized_shape``. No running
    statistics: training and inference compute the same thing.

    Shape: ``(*, *normalized_shape)``; output the same.
    """
    return _row_norm(input, normalized_shape, weight, bias, eps, True, backend, name)


def rms_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
    *,
    backend: str | None = None,
    name: str = "rms_norm",
) -> Tensor:
    r"""Root-mean-square normalization (`Zhang & Sennrich 2019
    <https://arxiv.org/abs/1910.07467>`__): LayerNorm without centering or bias.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} \cdot \gamma

    ``eps=None`` uses the machine epsilon of the computation dtype, as torch's kernel does:
    ``torch.finfo(input.dtype).eps`` for float32/float64, float32's for float16/bfloat16.
    Equivalence: on inputs with zero mean over ``normalized_shape``, equals ``layer_norm``.
    """
    if eps is None:
        v.check_floating(input, name)
        eps = default_rms_eps(input.dtype)
    return _row_norm(input, normalized_shape, weight, None, eps, False, backend, name)


def default_rms_eps(dtype: torch.dtype) -> float:
    """RMSNorm's ``eps=None``: the epsilon of torch's computation dtype for ``dtype`` (float32
    for float16/bfloat16 inputs; torch's documentation names the input's, its kernel uses
    this one)."""
    return torch.finfo(accumulation_dtype(dtype)).eps


def layer_norm_2d(
    input: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-6,
    *,
    backend: str | None = None,
    name: str = "layer_norm_2d",
) -> Tensor:
    r"""Layer normalization over the channels of ``input (N, C, *)`` at each position: the
    ``LayerNorm2d`` of ConvNeXt (timm, torchvision), without permuting the tensor.

    .. math::
        y_{n,c,p} = \frac{x_{n,c,p} - \mathrm{E}_c[x_{n,:,p}]}
                         {\sqrt{\mathrm{Var}_c[x_{n,:,p}] + \epsilon}} \cdot \gamma_c + \beta_c

    Biased variance over the ``C`` values of each position ``p``; ``weight``/``bias`` are
    ``(C,)``. Equals ``layer_norm(input.movedim(1, -1), (C,), weight, bias, eps).movedim(-1,
    1)``, strides included: the result has the channel dim fastest (channels_last for 4-D).
    """
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    channels = input.shape[1]
    v.check_vector(weight, channels, "weight", name)
    v.check_vector(bias, channels, "bias", name)
    v.check_eps(eps, False, name)
    return normalize_channels(input, weight, bias, eps, "identity", 0.01, backend, name)


def normalize_channels(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    act: str,
    negative_slope: float,
    backend: str | None,
    name: str,
) -> Tensor:
    """LayerNorm2d (then ``act``) on validated arguments (what the layers call)."""
    y = select("layer_norm_2d", input, backend)(input, weight, bias, eps)
    return activation_on_output(y, act, negative_slope, view=True)  # a permuted view
