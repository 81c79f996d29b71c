"""Batch normalization with a fused activation, stateless."""

from __future__ import annotations

from torch import Tensor

from normkit.functional import _validate as v
from normkit.functional import single_sample as one
from normkit.functional.batch_norm import normalize_per_channel


def batch_norm_act(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    negative_slope: float = 0.01,
    *,
    mask: Tensor | None = None,
    num_batches_tracked: Tensor | None = None,
    single_sample: str = "error",
    backend: str | None = None,
    name: str = "batch_norm_act",
) -> Tensor:
    r"""``act(batch_norm(input, ...))`` computed in one pass: the activation is fused into the
    normalization primitives, forward and backward (the backward recomputes the
    pre-activation from ``input``; nothing extra is stored).

    .. math::
        y = \mathrm{act}\!\left(\gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta\right)

    ``act``: ``"relu"``, ``"leaky_relu"`` (``negative_slope``), ``"silu"``, ``"gelu"``
    (exact, erf-based, like ``torch.nn.GELU()``), ``"relu6"``, ``"hardswish"`` or
    ``"identity"``. Statistics, running
    update and ``training`` semantics are :func:`~normkit.functional.batch_norm`'s, ``mask``
    (a padded batch's valid positions; padded positions output 0) and ``single_sample`` (a
    training batch with one value per channel) included.

    Shape: ``(N, C, *)``, output the same.
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    v.check_activation(act, negative_slope, name)
    if single_sample != "error" and one.applies(single_sample, training, mask, input, name):
        return one.single_sample_call(
            input, running_mean, running_var, weight, bias, single_sample, eps, backend, name,
            act, negative_slope,
        )  # fmt: skip
    return normalize_per_channel(
        input, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked, backend, name, act, negative_slope, mask,
    )  # fmt: skip
