"""Batch normalization and instance normalization, stateless (torch.nn.functional's API)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normkit.autograd import batch_norm_eval, norm
from normkit.functional import _validate as v
from normkit.functional._running import update_running_stats


def _as_ncl(input: Tensor) -> Tensor:
    """``(N, C, *)`` -> ``(N, C, L)``; a view whenever the layout allows (channels_last too)."""
    return input.reshape(input.shape[0], input.shape[1], math.prod(input.shape[2:]))


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    *,
    num_batches_tracked: Tensor | None = None,
    backend: str | None = None,
    name: str = "batch_norm",
) -> Tensor:
    r"""Batch normalization over ``input (N, C, *)``, per channel (`Ioffe & Szegedy 2015
    <https://arxiv.org/abs/1502.03167>`__).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    In training the statistics are the batch's, over ``(N, *)``, with the **biased**
    variance; ``running_mean``/``running_var`` (if given) are updated in place with
    ``running = (1 - momentum) * running + momentum * batch`` where the batch variance is
    the **unbiased** one. Not training, the running statistics are used instead.

    Args:
        input: ``(N, C)`` or ``(N, C, *)`` floating tensor (any memory layout).
        running_mean, running_var: ``(C,)`` buffers or None.
        weight, bias: ``(C,)`` affine parameters :math:`\gamma, \beta` or None.
        training: use batch statistics (and update the running ones). Default: False
        momentum: update factor. ``None`` gives the cumulative average and needs
            ``num_batches_tracked``. Default: 0.1
        eps: added to the variance. Default: 1e-5
        num_batches_tracked: 0-d long buffer counting updates (normkit extension).
        backend: force a backend (``"torch"``, ``"numba"``); default automatic.
        name: layer name used in error messages and warnings.

    Same signature and semantics as :func:`torch.nn.functional.batch_norm`, except that a
    batch with non-finite statistics does not update the running statistics (see
    :mod:`normkit.functional._running`).
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    x = _as_ncl(input)
    if not training:
        v.check_running_stats_for_eval(running_mean, running_var, name)
        y = batch_norm_eval(x, running_mean, running_var, weight, bias, eps, backend)
        return y.reshape(input.shape)
    v.check_more_than_one_value_per_channel(input, name)
    y, mean, var = norm("batch", x, weight, bias, eps, backend=backend)
    if running_mean is not None or running_var is not None:
        count = x.shape[0] * x.shape[2]
        update_running_stats(
            running_mean, running_var, mean, var, count, momentum, num_batches_tracked, name,
            backend,
        )  # fmt: skip
    return y.reshape(input.shape)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    backend: str | None = None,
    name: str = "instance_norm",
) -> Tensor:
    r"""Instance normalization: each ``(n, c)`` plane of ``input (N, C, *)`` normalized on its own
    (`Ulyanov et al. 2016 <https://arxiv.org/abs/1607.08022>`__).

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}
                 \cdot \gamma_c + \beta_c

    With ``use_input_stats`` the statistics are the plane's own (biased variance) and the
    running statistics, if given, move towards the batch average of the per-plane mean and
    **unbiased** variance (torch's rule). Otherwise the running statistics normalize, per
    channel, exactly like :func:`batch_norm` in inference.

    Equivalence: ``instance_norm(x) == group_norm(x, num_groups=C)``.

    Shape: ``(N, C, *)`` with at least one spatial dim; output the same.
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, use_input_stats, name, min_rank=3
    )
    channels = input.shape[1]
    x = _as_ncl(input)
    if not use_input_stats:
        v.check_running_stats_for_eval(running_mean, running_var, name)
        y = batch_norm_eval(x, running_mean, running_var, weight, bias, eps, backend)
        return y.reshape(input.shape)
    v.check_more_than_one_spatial_element(input, name)
    y, mean, var = norm("group", x, weight, bias, eps, option=channels, backend=backend)
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            batch_mean, batch_var = mean.mean(0), var.mean(0)
        update_running_stats(
            running_mean, running_var, batch_mean, batch_var, x.shape[2], momentum, None, name,
            backend,
        )  # fmt: skip
    return y.reshape(input.shape)
