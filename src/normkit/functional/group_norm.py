"""Group normalization, stateless (torch.nn.functional's API)."""

from __future__ import annotations

from torch import Tensor

from normkit.backends import select
from normkit.functional import _validate as v
from normkit.functional.masked import normalize_groups_masked


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    mask: Tensor | None = None,
    backend: str | None = None,
    name: str = "group_norm",
) -> Tensor:
    r"""Group normalization (`Wu & He 2018 <https://arxiv.org/abs/1803.08494>`__).

    The ``C`` channels are split into ``num_groups`` groups; each ``(n, group)`` is
    normalized over its ``C / G`` channels and all spatial positions (biased variance),
    then scaled and shifted per channel:

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{ng}]}{\sqrt{\mathrm{Var}[x_{ng}] + \epsilon}}
                 \cdot \gamma_c + \beta_c

    Equivalences: ``group_norm(x, 1)`` is layer norm over ``(C, *)`` with per-channel
    affine; ``group_norm(x, C)`` is instance norm. Independent of the batch size.

    ``mask`` (keyword, normkit extension): bool ``(N, *)``, True at valid positions; each
    ``(n, group)`` is normalized over its channels at the sample's valid positions, padded
    positions output 0 (a sample without valid positions outputs zeros).

    Shape: ``(N, C, *)``; output the same.
    """
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    channels = input.shape[1]
    v.check_groups(channels, num_groups, name)
    v.check_vector(weight, channels, "weight", name)
    v.check_vector(bias, channels, "bias", name)
    v.check_eps(eps, False, name)
    return normalize_groups(input, num_groups, weight, bias, eps, backend, name, mask)


def normalize_groups(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    backend: str | None,
    name: str,
    mask: Tensor | None = None,
) -> Tensor:
    """GroupNorm on validated parameters (what the layers call)."""
    if mask is not None:
        return normalize_groups_masked(input, mask, num_groups, weight, bias, eps, backend, name)
    v.check_group_norm_size(input, num_groups, name)
    return select("group_norm", input, backend)(input, num_groups, weight, bias, eps)
