"""The running-statistics rule as two registered ops, shared by every layer and backend.

torch's convention (the opposite of Keras/Flax, whose ``momentum`` is the decay)::

    running_mean = (1 - f) * running_mean + f * batch_mean
    running_var  = (1 - f) * running_var  + f * batch_var * n / (n - 1)    # unbiased
    f = momentum,  or 1 / (num_batches_tracked + 1) when momentum is None (cumulative average)

Normalization itself uses the biased variance; only the stored estimate is unbiased.

Departure from torch, on purpose: a batch whose statistics are not finite (NaN/Inf in the
input) leaves ``running_mean``, ``running_var`` and ``num_batches_tracked`` untouched and
raises :class:`NonFiniteStatisticsWarning` naming the layer; torch silently stores NaN.
On CUDA the guard is branch-free (``torch.where``, no host synchronization) and no warning
is raised.

* ``normkit::running_stats_update`` applies the rule to given batch statistics (the
  BatchNorm variants compute them; the numba BatchNorm op calls the rule,
  :func:`update_running_stats`, inside its own forward op);
* ``normkit::keep_running_stats_finite`` follows torch's own kernel, which updates the
  buffers in place: it puts their previous values back if the update turned finite running
  statistics non-finite, and counts the batch otherwise.

Both are opaque ops with fake implementations: eager and ``torch.compile`` run the same
code, warning included.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch
from torch import Tensor

from normkit._shared import NonFiniteStatisticsWarning
from normkit.backends._ops import define


def _warn(name: str) -> None:
    warnings.warn(
        f"{name}: the batch statistics are not finite (NaN or Inf in the input); "
        "running_mean, running_var and num_batches_tracked were left unchanged",
        NonFiniteStatisticsWarning,
        stacklevel=4,
    )


_FLAGS = threading.local()


def _finite(*tensors: Tensor | None) -> bool:
    """No NaN/Inf in any of the CPU ``tensors``: one fused check and one host sync.

    The check is AMP's non-finite check with a unit scale, which leaves the values as they
    are and does not count as a modification for autograd (torch's BatchNorm saved the
    running statistics for its backward; the contract tests' backward passes would fail if
    it did). Its flag tensors are kept per thread (they cost more to create than the check)."""
    flags = getattr(_FLAGS, "cpu", None)
    if flags is None:
        flags = _FLAGS.cpu = (torch.zeros(()), torch.ones(()))
    found, unit = flags
    torch._amp_foreach_non_finite_check_and_unscale_(
        [t for t in tensors if t is not None], found, unit
    )
    if found.item():
        found.zero_()
        return False
    return True


_KERNELS: dict[tuple[str, torch.dtype], object] = {}
_NO_BUFFER: dict[torch.dtype, object] = {}


def _numba_kernel(name: str, dtype: torch.dtype):
    """The serial numba kernel ``name`` (``running_update``) for
    ``dtype``, or None where numba does not load."""
    key = (name, dtype)
    if key not in _KERNELS:
        try:
            from normkit.kernels import KERNELS
        except ImportError:  # pragma: no cover - numba missing
            _KERNELS[key] = None
        else:
            np_dtype = np.float32 if dtype == torch.float32 else np.float64
            _KERNELS[key] = KERNELS[name].get("vec", np_dtype)
            _NO_BUFFER[dtype] = np.empty(0, np_dtype)
    return _KERNELS[key]


def _kernel_for(name: str, statistic: Tensor, *vectors: Tensor | None):
    """The numba kernel ``name`` when ``statistic`` and every other ``vectors`` (None: an
    absent buffer) are contiguous CPU vectors of one float32/float64 dtype, else None."""
    dtype = statistic.dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        return None
    for t in (statistic, *vectors):
        if t is not None and not (
            t.dtype is dtype and t.is_cpu and t.dim() == 1 and t.is_contiguous()
        ):
            return None
    return _KERNELS.get((name, dtype)) or _numba_kernel(name, dtype)


def _lerp_if_finite(running_mean, running_var, batch_mean, batch_var, factor, bessel) -> bool:
    kernel = _kernel_for("running_update", batch_mean, batch_var, running_mean, running_var)
    if kernel is not None:
        empty = _NO_BUFFER[batch_mean.dtype]
        mean_a = empty if running_mean is None else running_mean.detach().numpy()
        var_a = empty if running_var is None else running_var.detach().numpy()
        stats = (batch_mean.detach().numpy(), batch_var.detach().numpy())
        if not kernel(mean_a, var_a, *stats, float(factor), float(bessel)):
            return False
        # Written through NumPy: tell autograd, as an in-place torch op would.
        torch.autograd.graph.increment_version(
            tuple(t for t in (running_mean, running_var) if t is not None)
        )
        return True
    if not _finite(batch_mean, batch_var):
        return False
    if running_mean is not None:
        running_mean.lerp_(batch_mean.to(running_mean.dtype), factor)
    if running_var is not None:
        running_var.lerp_(batch_var.to(running_var.dtype) * bessel, factor)
    return True


def _update_branch_free(running_mean, running_var, nbt, batch_mean, batch_var, momentum, bessel):
    finite = torch.isfinite(batch_mean).all() & torch.isfinite(batch_var).all()
    buffer = running_mean if running_mean is not None else running_var
    if momentum is not None:
        factor = torch.where(finite, torch.tensor(momentum, dtype=buffer.dtype), 0.0)
    else:
        factor = torch.where(finite, 1.0 / (nbt + 1).to(buffer.dtype), 0.0)
    for buf, stat, scale in ((running_mean, batch_mean, 1.0), (running_var, batch_var, bessel)):
        if buf is not None:
            target = torch.where(finite, stat.to(buf.dtype) * scale, buf)
            buf.copy_(buf + factor.to(buf.device) * (target - buf))
    if nbt is not None:
        nbt.add_(finite.to(nbt.dtype))


@torch.no_grad()
def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    count: float,
    momentum: float | None,
    name: str,
) -> None:
    if count == 0:  # an empty batch: nothing to learn from; torch still counts it
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return
    bessel = count / (count - 1) if count > 1 else 1.0
    if not batch_mean.is_cpu:
        _update_branch_free(
            running_mean, running_var, num_batches_tracked, batch_mean, batch_var, momentum,
            bessel,
        )  # fmt: skip
        return
    if momentum is not None:
        factor = momentum
    else:  # the cumulative average over this batch too: 1 / (batches tracked after it)
        factor = 1.0 / (float(num_batches_tracked) + 1.0)
    if not _lerp_if_finite(running_mean, running_var, batch_mean, batch_var, factor, bessel):
        _warn(name)
        return
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)


def _update_fake(
    running_mean, running_var, num_batches_tracked, batch_mean, batch_var, count, momentum, name
) -> None:
    return None


running_stats_update = define(
    "running_stats_update(Tensor(a!)? running_mean, Tensor(b!)? running_var, "
    "Tensor(c!)? num_batches_tracked, Tensor batch_mean, Tensor batch_var, float count, "
    "float? momentum, str name) -> ()",
    update_running_stats,
    _update_fake,
    "CompositeExplicitAutograd",
)


def _keep_finite_impl(
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor | None,
    previous: Tensor,
    name: str,
) -> None:
    if running_mean.requires_grad or running_var.requires_grad:
        with torch.no_grad():  # in-place updates of tensors autograd must not record
            return _keep_finite_impl(
                running_mean.detach(), running_var.detach(), num_batches_tracked, previous, name
            )
    # Values put back are written past autograd's version counter (``.data``): torch's
    # kernel saved the buffers for its backward at their updated version, and the restored
    # values are the ones it read.
    if not running_mean.is_cpu:
        ok = (torch.isfinite(running_mean).all() & torch.isfinite(running_var).all()) | ~(
            torch.isfinite(previous).all()
        )
        kept = torch.where(ok, torch.cat((running_mean, running_var)), previous)
        channels = running_mean.shape[0]
        running_mean.data.copy_(kept[:channels])
        running_var.data.copy_(kept[channels:])
        if num_batches_tracked is not None:
            num_batches_tracked.add_(ok.to(num_batches_tracked.dtype))
        return
    if _finite(running_mean, running_var) or not _finite(previous):
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return
    channels = running_mean.shape[0]
    running_mean.data.copy_(previous[:channels])
    running_var.data.copy_(previous[channels:])
    _warn(name)


def _keep_finite_fake(running_mean, running_var, num_batches_tracked, previous, name) -> None:
    return None


keep_running_stats_finite = define(
    "keep_running_stats_finite(Tensor(a!) running_mean, Tensor(b!) running_var, "
    "Tensor(c!)? num_batches_tracked, Tensor previous, str name) -> ()",
    _keep_finite_impl,
    _keep_finite_fake,
    "CompositeExplicitAutograd",
)
