"""Batch normalization with a fused activation, stateless."""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.autograd.batch_norm_variants import batch_stats, bn_apply
from normkit.functional import _validate as v
from normkit.functional._bn_common import fixed_stats
from normkit.functional._running import update_running_stats
from normkit.functional.batch_norm import _as_ncl


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
    num_batches_tracked: Tensor | None = None,
    backend: str | None = None,
    name: str = "batch_norm_act",
) -> Tensor:
    r"""``act(batch_norm(input, ...))`` computed in one pass: the activation is fused into the
    normalization primitives, forward and backward (the backward recomputes the
    pre-activation from ``input``; nothing extra is stored).

    .. math::
        y = \mathrm{act}\!\left(\gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta\right)

    ``act``: ``"relu"``, ``"leaky_relu"`` (``negative_slope``), ``"silu"``, ``"gelu"``
    (exact, erf-based, like ``torch.nn.GELU()``) or ``"identity"``. Statistics, running
    update and ``training`` semantics are :func:`~normkit.functional.batch_norm`'s.

    Shape: ``(N, C, *)``, output the same.
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    v.check_activation(act, negative_slope, name)
    x = _as_ncl(input)
    if not training:
        v.check_running_stats_for_eval(running_mean, running_var, name)
        mean, invstd = fixed_stats(input, running_mean, running_var, eps)
        y = bn_apply(
            x, mean, invstd, weight, bias, eps, act, negative_slope, batch_stats=False,
            backend=backend,
        )  # fmt: skip
        return y.reshape(input.shape)
    v.check_more_than_one_value_per_channel(input, name)
    mean, var = batch_stats(x, backend)
    invstd = torch.rsqrt(var + eps)
    y = bn_apply(x, mean, invstd, weight, bias, eps, act, negative_slope, backend=backend)
    if running_mean is not None or running_var is not None:
        count = x.shape[0] * x.shape[2]
        update_running_stats(
            running_mean, running_var, mean, var, count, momentum, num_batches_tracked, name
        )
    return y.reshape(input.shape)
