"""Ghost batch normalization (virtual batches), stateless."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normkit.autograd.batch_norm_variants import batch_stats, bn_apply
from normkit.functional import _validate as v
from normkit.functional._running import update_running_stats
from normkit.functional.batch_norm import batch_norm


def ghost_batch_sizes(batch_size: int, virtual_batch_size: int, values_per_sample: int = 1):
    """How a batch of ``batch_size`` samples splits into ghost batches.

    In order, ``batch_size // virtual_batch_size`` ghost batches of ``virtual_batch_size``
    samples, then one of the remaining ``batch_size % virtual_batch_size`` samples if any.
    A remainder with a single value per channel (one sample and ``values_per_sample == 1``)
    has no variance of its own, so it joins the previous ghost batch instead.

    >>> ghost_batch_sizes(10, 4), ghost_batch_sizes(9, 4), ghost_batch_sizes(3, 4)
    ([4, 4, 2], [4, 5], [3])
    """
    full, rest = divmod(batch_size, virtual_batch_size)
    sizes = [virtual_batch_size] * full + ([rest] if rest else [])
    if len(sizes) > 1 and sizes[-1] * values_per_sample < 2:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def ghost_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    virtual_batch_size: int = 32,
    *,
    num_batches_tracked: Tensor | None = None,
    single_sample: str = "error",
    backend: str | None = None,
    name: str = "ghost_batch_norm",
) -> Tensor:
    r"""Ghost batch normalization (`Hoffer et al. 2017 <https://arxiv.org/abs/1705.08741>`__;
    Keras's ``virtual_batch_size``): in training, each ghost batch of ``virtual_batch_size``
    consecutive samples is normalized with its own statistics.

    .. math::
        y_i = \gamma \frac{x_i - \mu_{g(i)}}{\sqrt{\sigma^2_{g(i)} + \epsilon}} + \beta

    with :math:`\mu_g, \sigma^2_g` the mean and biased variance of ghost batch ``g`` over its
    samples (and spatial positions). The split is :func:`ghost_batch_sizes` (an uneven last
    ghost batch keeps its own statistics; a single left-over sample without spatial extent
    joins the previous one). A batch of at most ``virtual_batch_size`` samples is exactly
    :func:`~normkit.functional.batch_norm`.

    Running statistics, updated once per forward from the ``k`` ghost batches of ``n_g``
    values per channel each (``n = sum(n_g)``)::

        batch_mean = sum(n_g * mu_g) / n                        # the whole batch's mean
        batch_var  = sum(n_g * sigma2_g) / (n - k)              # pooled within-ghost variance
        running    = (1 - momentum) * running + momentum * batch      (momentum=None: 1/t)

    ``batch_var`` Bessel-corrects each ghost batch with its own size (for ``k = 1`` it is
    BatchNorm's unbiased variance); it estimates the variance the layer sees inside a ghost
    batch, the spread it normalized away during training. Inference uses the running
    statistics, as BatchNorm does.

    Args:
        input: ``(N, C)`` or ``(N, C, *)``; ghost batches split ``N``.
        virtual_batch_size: samples per ghost batch (positive int). Default: 32
        single_sample: a training batch of one value per channel (one sample, so one ghost
            batch): as :func:`~normkit.functional.batch_norm`'s. Default: "error"
        (others as :func:`~normkit.functional.batch_norm`)
    """
    v.check_virtual_batch_size(virtual_batch_size, name)
    batch = input.shape[0] if input.dim() > 0 else 0
    if not training or batch <= virtual_batch_size:
        return batch_norm(
            input, running_mean, running_var, weight, bias, training, momentum, eps,
            num_batches_tracked=num_batches_tracked, single_sample=single_sample,
            backend=backend, name=name,
        )  # fmt: skip
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    v.check_ghost_batch_values(input, virtual_batch_size, name)
    per_sample = math.prod(input.shape[2:])
    sizes = ghost_batch_sizes(batch, virtual_batch_size, per_sample)
    # One output in the input's memory layout, filled ghost batch by ghost batch (torch.cat
    # would lose channels_last when a ghost batch has a single sample).
    output = torch.empty_like(input)
    means, vars_ = [], []
    start = 0
    for chunk in input.split(sizes):
        mean, var = batch_stats(chunk, backend)
        y = bn_apply(chunk, mean, torch.rsqrt(var + eps), weight, bias, eps, backend=backend)
        output[start : start + chunk.shape[0]] = y
        start += chunk.shape[0]
        means.append(mean)
        vars_.append(var)
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            counts = torch.tensor(sizes, dtype=means[0].dtype, device=means[0].device)
            counts = counts.unsqueeze(1) * per_sample
            total = batch * per_sample
            batch_mean = (counts * torch.stack(means)).sum(0) / total
            within = (counts * torch.stack(vars_)).sum(0) / total
        # update_running_stats applies the Bessel factor c / (c - 1); with the effective
        # count c = n / k it is n / (n - k): the pooled within-ghost variance above.
        update_running_stats(
            running_mean, running_var, batch_mean, within, total / len(sizes), momentum,
            num_batches_tracked, name,
        )  # fmt: skip
    return output
