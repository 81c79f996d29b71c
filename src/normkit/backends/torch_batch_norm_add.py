"""BatchNorm + residual add + activation on torch's kernels: the fallback of the fused op
(float16/bfloat16, CUDA, small tensors where torch's BatchNorm is the faster one) and the
**contract** that :mod:`normkit.backends.numba_batch_norm_add` implements with the same
signatures::

    batch_norm_add_train(x, residual, weight, bias, running_mean, running_var,
                         num_batches_tracked, momentum, eps, act, name) -> y
    batch_norm_add_eval(x, residual, weight, bias, running_mean, running_var, eps, act) -> y

    y = act(BN(x) + residual),   act in ("identity", "relu")

``x`` and ``residual`` are ``(N, C, *)`` of the same shape and dtype; BN is
:func:`normkit.backends.torch_backend.batch_norm_train` / ``batch_norm_eval`` (batch or
running statistics, the running ones updated and guarded as for BatchNorm itself). ``y`` is
a fresh tensor in BatchNorm's output format. Here the add and the ReLU run in place on
BatchNorm's output, as a ResNet block's ``out += identity; relu(out)`` does: same values,
same gradients (``d residual = g * [y > 0]``), to any order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends import torch_backend


def add_activation(y: Tensor, residual: Tensor, act: str) -> Tensor:
    """``act(y + residual)``, in place on ``y`` (BatchNorm's fresh output)."""
    y = y.add_(residual)
    return torch.relu_(y) if act == "relu" else y


def batch_norm_add_train(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    eps: float,
    act: str = "relu",
    name: str = "batch_norm_add_act",
) -> Tensor:
    y = torch_backend.batch_norm_train(
        x, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps,
        "identity", 0.01, name,
    )  # fmt: skip
    return add_activation(y, residual, act)


def batch_norm_add_eval(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    act: str = "relu",
) -> Tensor:
    y = torch_backend.batch_norm_eval(x, weight, bias, running_mean, running_var, eps)
    return add_activation(y, residual, act)
