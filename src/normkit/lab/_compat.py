"""Measurement helpers the experiments need from ``normkit.tools``, with local fallbacks.

``normkit.tools.monitor`` and ``normkit.tools.recalibrate`` are being written in parallel;
until they land, this module provides the two operations the lab uses, kept here so that
switching to the tools touches one file:

- :func:`input_percentiles`: percentiles of one unit's input to a module (a forward
  pre-hook), e.g. the sigmoid input of a hidden unit in the BN paper's Figure 1;
- :func:`recalibrate`: exact population statistics for every BatchNorm layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from normkit.nn.batchnorm import _BatchNorm


@torch.no_grad()
def input_percentiles(
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    unit: int,
    percentiles: Sequence[float] = (15, 50, 85),
) -> list[float]:
    """Percentiles of ``module``'s input at feature ``unit`` when ``model(x)`` runs.

    ``model`` runs in whatever mode it is in (set eval mode for running statistics); its
    state is not changed in eval mode. Returns one value per entry of ``percentiles``.
    """
    captured: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        captured.append(args[0][:, unit].detach().reshape(-1))

    handle = module.register_forward_pre_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    values = torch.cat(captured).double()
    q = torch.tensor([p / 100.0 for p in percentiles], dtype=torch.float64)
    return [float(v) for v in torch.quantile(values, q)]


class _Moments:
    """A forward pre-hook summing x and x^2 per channel (float64) over every forward call."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.total_sq = torch.zeros(channels, dtype=torch.float64)
        self.count = 0

    def __call__(self, _module: nn.Module, args: tuple[Tensor, ...]) -> None:
        z = args[0].double().transpose(0, 1).reshape(self.channels, -1)
        self.total += z.sum(1)
        self.total_sq += (z * z).sum(1)
        self.count += z.shape[1]


@torch.no_grad()
def recalibrate(model: nn.Module, x: Tensor, batch_size: int = 500) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are the exact population ones.

    Layer by layer in forward order, with the model in eval mode and every earlier BN layer
    already recalibrated, each BN layer's input is accumulated over all of ``x`` in float64:
    ``running_mean = mean`` and ``running_var = sum((x - mean)^2) / (n - 1)`` per channel
    (n = examples x spatial positions; the unbiased form, as torch stores running
    variances). Eval-mode outputs then normalise with the statistics of the data the layer
    really receives at inference, not with a moving average of training batches. Layers
    other than BatchNorm are untouched; the input model is not modified.
    """
    model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    for layer in [m for m in model.modules() if isinstance(m, _BatchNorm)]:
        if layer.running_mean is None:
            continue
        moments = _Moments(layer.num_features)
        handle = layer.register_forward_pre_hook(moments)
        try:
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size])
        finally:
            handle.remove()
        total, total_sq, count = moments.total, moments.total_sq, moments.count
        mean = total / count
        var = (total_sq - count * mean * mean).clamp_min(0) / max(count - 1, 1)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))
    model.train(was_training)
    return model
