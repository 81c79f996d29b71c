"""Layer normalization and RMS normalization, stateless (torch.nn.functional's API)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from normkit.autograd import norm
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
    v.check_floating(input, name)
    shape = _normalized_tuple(normalized_shape)
    v.check_normalized_shape(input, shape, name)
    v.check_param_shape(weight, shape, "weight", name)
    v.check_param_shape(bias, shape, "bias", name)
    v.check_eps(eps, False, name)
    features = math.prod(shape)
    rows = input.reshape(-1, features)
    y, _, _ = norm(
        "row",
        rows,
        None if weight is None else weight.reshape(features),
        None if bias is None else bias.reshape(features),
        eps,
        option=int(center),
        backend=backend,
    )
    return y.reshape(input.shape)


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

    ``eps=None`` uses ``torch.finfo(input.dtype).eps`` (torch's default).
    Equivalence: on inputs with zero mean over ``normalized_shape``, equals ``layer_norm``.
    """
    if eps is None:
        v.check_floating(input, name)
        eps = torch.finfo(input.dtype).eps
    return _row_norm(input, normalized_shape, weight, None, eps, False, backend, name)
