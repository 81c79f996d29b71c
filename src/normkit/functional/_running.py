"""The running-statistics rule, the single source of truth for every layer that tracks them.

PyTorch's convention (the opposite of Keras/Flax, whose ``momentum`` is the decay)::

    running_mean = (1 - f) * running_mean + f * batch_mean
    running_var  = (1 - f) * running_var  + f * batch_var * n / (n - 1)    # unbiased
    f = momentum,  or 1 / num_batches_tracked when momentum is None (cumulative average)

Normalization itself uses the biased variance; only the stored estimate is unbiased.

Departure from torch, on purpose: a batch whose statistics are not finite (NaN/Inf in the
input) leaves the running statistics and ``num_batches_tracked`` untouched and raises a
``RuntimeWarning`` naming the layer; torch would silently poison the buffers. Under
``torch.compile`` the same guard runs as a branch-free ``torch.where`` (no warning).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from normkit.backends import get_impl


class NonFiniteStatisticsWarning(RuntimeWarning):
    """A training batch produced NaN/Inf statistics; the running statistics were kept."""


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    count: int,
    momentum: float | None,
    num_batches_tracked: Tensor | None = None,
    name: str = "batch_norm",
    backend: str | None = None,
) -> None:
    """Fold one batch's statistics into the running estimates, in place.

    Args:
        running_mean, running_var: ``(C,)`` buffers, updated in place (either may be None).
        batch_mean, batch_var: ``(C,)`` batch mean and **biased** batch variance.
        count: values per channel ``n`` behind the batch statistics (Bessel: ``n / (n - 1)``).
        momentum: update factor, or ``None`` for the cumulative average (needs
            ``num_batches_tracked``).
        num_batches_tracked: 0-d long buffer, incremented in place when given.
        name: layer name for the warning.
        backend: force a backend for the update (default: automatic, as for the ops).
    """
    if momentum is None and num_batches_tracked is None:
        raise ValueError(
            f"{name}: momentum=None (cumulative moving average) needs num_batches_tracked"
        )
    if count == 0:  # empty batch: nothing to learn from; torch still counts the batch
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return
    bessel = count / (count - 1) if count > 1 else 1.0
    if torch.compiler.is_compiling():
        with torch.no_grad():
            finite = torch.isfinite(batch_mean).all() & torch.isfinite(batch_var).all()
            _update_branch_free(
                running_mean, running_var, batch_mean, batch_var, bessel, momentum,
                num_batches_tracked, finite,
            )  # fmt: skip
        return
    if momentum is not None:
        factor = momentum
    else:  # the cumulative average over this batch too: 1 / (batches tracked after it)
        factor = 1.0 / (float(num_batches_tracked) + 1.0)
    # lerp: running + factor * (batch - running), guarded by the finiteness check, in one
    # backend op (the compiled kernels do it in one call for float32/float64 buffers).
    update = get_impl("running_stats_update", batch_mean, backend)
    if not update(running_mean, running_var, batch_mean, batch_var, factor, bessel):
        warnings.warn(
            f"{name}: the batch statistics are not finite (NaN or Inf in the input); "
            "running_mean, running_var and num_batches_tracked were left unchanged",
            NonFiniteStatisticsWarning,
            stacklevel=2,
        )
        return
    if num_batches_tracked is not None:  # an integer tensor: never tracked by autograd
        num_batches_tracked.add_(1)


def _update_branch_free(
    running_mean, running_var, batch_mean, batch_var, bessel, momentum, num_batches_tracked, finite
) -> None:
    if num_batches_tracked is not None:
        num_batches_tracked.add_(finite.to(num_batches_tracked.dtype))
    # The factor in the buffers' dtype: a Python-scalar where() would be float32, which
    # rounds momentum=0.1 at 1.5e-9 and breaks float64 parity.
    buffer = running_mean if running_mean is not None else running_var
    dtype = buffer.dtype if buffer is not None else torch.float64
    if momentum is not None:
        factor = torch.where(finite, torch.tensor(momentum, dtype=dtype), 0.0)
    else:
        factor = torch.where(finite, 1.0 / num_batches_tracked.clamp_min(1).to(dtype), 0.0)
    if running_mean is not None:
        new = torch.where(finite, batch_mean.to(running_mean.dtype), running_mean)
        running_mean.copy_(running_mean * (1.0 - factor) + new * factor)
    if running_var is not None:
        new = torch.where(finite, batch_var.to(running_var.dtype) * bessel, running_var)
        running_var.copy_(running_var * (1.0 - factor) + new * factor)
