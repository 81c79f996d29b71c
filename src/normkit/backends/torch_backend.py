"""The ``"torch"`` backend: torch's own kernels with normkit's semantics on top.

It serves every device and dtype (CUDA, float16, bfloat16, empty batches) and, where the
measured crossover says torch's kernel is faster, small CPU tensors too. Outputs, gradients
and running statistics are torch's bit for bit, except for the guard: torch's kernel updates
the running statistics in place, and ``normkit::keep_running_stats_finite`` puts their
previous values back if the batch made them non-finite.

Every function here is the **contract** of the op of the same name, which the numba backend
implements with the same signature and semantics. ``x`` always has the layer's own shape
(``(N, C, *)`` for the per-channel ops, ``(*, *normalized_shape)`` for the row norms); the
result is a fresh tensor of that shape, in the memory format torch would return (except
``layer_norm_2d``, which returns what timm's module does: a permuted view).

* ``batch_norm_train(x, weight, bias, running_mean, running_var, num_batches_tracked,
  momentum, eps, act, negative_slope, name)``: batch statistics (biased variance), running
  statistics updated when given (unbiased variance, factor ``momentum`` or the cumulative
  ``1 / (num_batches_tracked + 1)``), ``num_batches_tracked`` incremented, then ``act``.
* ``batch_norm_eval(x, weight, bias, running_mean, running_var, eps, act, negative_slope)``.
* ``instance_norm_train(x, weight, bias, running_mean, running_var, momentum, eps, name)``:
  per-``(n, c)`` statistics; the running statistics move towards the batch average of the
  per-instance mean and unbiased variance.
* ``group_norm(x, num_groups, weight, bias, eps)``.
* ``layer_norm(x, normalized_shape, weight, bias, eps)``; ``rms_norm(x, normalized_shape,
  weight, eps)``.
* ``layer_norm_2d(x, weight, bias, eps)``: LayerNorm over the channels ``C`` of
  ``x (N, C, *)`` at each position (timm's and torchvision's ``LayerNorm2d``); the output
  has the channel dim fastest (channels_last for 4-D), whatever x's format, as the
  ``permute -> layer_norm -> permute`` of those libraries returns.

All are differentiable through torch's autograd, to any order. The BatchNorm variants'
primitives (``bn_stats``, ``bn_elemt``, ``bn_backward_reduce``, ``bn_backward_elemt``) are
the composite ones of :mod:`normkit.backends.torch_ops`; the masked ops (statistics from
the valid positions of a padded batch) are in :mod:`normkit.backends.torch_masked`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.backends import register_backend, torch_batch_free, torch_masked, torch_ops
from normkit.backends.running import keep_running_stats_finite, running_stats_update
from normkit.backends.torch_ops import activation_on_output


def _cudnn(x: Tensor) -> bool:
    """torch's ``cudnn_enabled`` argument (it only selects a CUDA kernel)."""
    return not x.is_cpu and torch.backends.cudnn.enabled


def _factor(momentum: float | None, num_batches_tracked: Tensor | None) -> float:
    if momentum is not None:
        return momentum
    return 1.0 / (float(num_batches_tracked) + 1.0)


def batch_norm_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    momentum: float | None,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
    name: str = "batch_norm",
) -> Tensor:
    if running_mean is None and running_var is None:
        y = torch.batch_norm(x, weight, bias, None, None, True, 0.0, eps, _cudnn(x))
        return activation_on_output(y, act, negative_slope)
    if x.numel() == 0:  # torch leaves the statistics and counts the batch
        y = torch.batch_norm(x, weight, bias, running_mean, running_var, True, 0.0, eps, False)
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return activation_on_output(y, act, negative_slope)
    if momentum is None and torch.compiler.is_compiling():
        return _cumulative_train_compiled(
            x, weight, bias, running_mean, running_var, num_batches_tracked, eps, act,
            negative_slope, name,
        )  # fmt: skip
    # torch's kernel updates the buffers in place (a missing one is a scratch buffer);
    # `previous` is what keep_running_stats_finite puts back if they became non-finite.
    mean, var = _buffers(running_mean, running_var)
    previous = torch.cat((mean, var))
    factor = _factor(momentum, num_batches_tracked)
    y = torch.native_batch_norm(x, weight, bias, mean, var, True, factor, eps)[0]
    keep_running_stats_finite(mean, var, num_batches_tracked, previous, name)
    return activation_on_output(y, act, negative_slope)


def _buffers(running_mean: Tensor | None, running_var: Tensor | None) -> tuple[Tensor, Tensor]:
    """Both running buffers, a scratch one (zeros, ones) standing for a missing one."""
    if running_mean is not None and running_var is not None:
        return running_mean, running_var
    given = running_mean if running_mean is not None else running_var
    mean = running_mean if running_mean is not None else torch.zeros_like(given)
    return mean, running_var if running_var is not None else torch.ones_like(given)


def _cumulative_train_compiled(
    x,
    weight,
    bias,
    running_mean,
    running_var,
    num_batches_tracked,
    eps,
    act,
    negative_slope,
    name,
) -> Tensor:
    """momentum=None while torch.compile traces: the factor ``1 / (num_batches_tracked + 1)``
    is data the graph cannot branch on, so the rule runs inside ``running_stats_update`` on
    the batch statistics instead of inside torch's kernel."""
    mean, var = torch_ops.batch_norm_stats(x.detach())
    y = torch.batch_norm(x, weight, bias, None, None, True, 0.0, eps, _cudnn(x))
    count = x.numel() // x.shape[1]
    running_stats_update(
        running_mean, running_var, num_batches_tracked, mean, var, float(count), None, name
    )
    return activation_on_output(y, act, negative_slope)


def batch_norm_eval(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    y = torch.batch_norm(x, weight, bias, running_mean, running_var, False, 0.0, eps, _cudnn(x))
    return activation_on_output(y, act, negative_slope)


def instance_norm_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float,
    eps: float,
    name: str = "instance_norm",
) -> Tensor:
    if running_mean is None or running_var is None:
        return torch.instance_norm(x, weight, bias, None, None, True, 0.0, eps, _cudnn(x))
    previous = torch.cat((running_mean, running_var))
    y = torch.instance_norm(
        x, weight, bias, running_mean, running_var, True, momentum, eps, _cudnn(x)
    )
    keep_running_stats_finite(running_mean, running_var, None, previous, name)
    return y


def group_norm(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    return torch.group_norm(x, num_groups, weight, bias, eps, _cudnn(x))


def layer_norm(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    return torch.layer_norm(x, normalized_shape, weight, bias, eps, _cudnn(x))


def rms_norm(
    x: Tensor, normalized_shape: tuple[int, ...], weight: Tensor | None, eps: float
) -> Tensor:
    return torch.rms_norm(x, normalized_shape, weight, eps)


def layer_norm_2d(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    # timm's and torchvision's own computation: the result is the permuted view.
    y = torch.layer_norm(x.movedim(1, -1), (x.shape[1],), weight, bias, eps, _cudnn(x))
    return y.movedim(-1, 1)


OPS = {
    "batch_norm_train": batch_norm_train,
    "batch_norm_eval": batch_norm_eval,
    "instance_norm_train": instance_norm_train,
    "group_norm": group_norm,
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "layer_norm_2d": layer_norm_2d,
    "bn_stats": torch_ops.batch_norm_stats,
    "bn_elemt": torch_ops.batch_norm_elemt,
    "bn_backward_reduce": torch_ops.batch_norm_backward_reduce,
    "bn_backward_elemt": torch_ops.batch_norm_backward_elemt,
    **torch_batch_free.OPS,
    **torch_masked.OPS,
}


def supports(dtype: torch.dtype, device_type: str) -> bool:
    return True


register_backend("torch", supports, OPS)
