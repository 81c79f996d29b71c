"""The running-statistics update in one call (no parallelism: ``C`` values, a few us).

``running_update`` is the rule of :func:`normkit.functional._running.update_running_stats`
for float32/float64 buffers: when every batch statistic is finite it moves the buffers
towards the batch, ``r = lerp(r, s, f)`` with ``s = batch_mean`` and
``s = batch_var * bessel``, computed as torch's ``lerp_`` computes it (in the data type,
``r + f * (s - r)`` for ``|f| < 0.5``, else ``s - (s - r) * (1 - f)``) and returns True;
otherwise it leaves the buffers untouched and returns False. Length-0 buffers stand for
absent ones (the batch statistic is still checked).

``running_keep_finite`` is the CPU body of ``normkit::keep_running_stats_finite``: torch's
kernel has just updated the buffers in place; if that turned finite buffers non-finite, it
copies their previous values back and returns False, else it counts the batch.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.core.extending import intrinsic

from normkit.kernels._jit import entry, kernel


@kernel
def _all_finite(v):
    for i in range(v.shape[0]):
        if not np.isfinite(v[i]):
            return False
    return True


@kernel
def _lerp(r, s, scale, f):
    t = r.dtype.type
    f_ = t(f)
    g = t(1.0 - f)
    k = t(scale)
    for i in range(r.shape[0]):
        target = s[i] * k
        if abs(f) < 0.5:
            r[i] = r[i] + f_ * (target - r[i])
        else:
            r[i] = target - (target - r[i]) * g


_V = "{t}[::1]"


@entry(vec=f"boolean({_V}, {_V}, {_V}, {_V}, float64, float64)")
def running_update(running_mean, running_var, batch_mean, batch_var, factor, bessel):
    """Fold finite batch statistics into the running buffers; False (nothing written) if
    a statistic is NaN/Inf."""
    if not (_all_finite(batch_mean) and _all_finite(batch_var)):
        return False
    if running_mean.shape[0] > 0:
        _lerp(running_mean, batch_mean, 1.0, factor)
    if running_var.shape[0] > 0:
        _lerp(running_var, batch_var, bessel, factor)
    return True


@intrinsic
def _pointer(typingctx, address, kind):
    """The integer ``address`` as a pointer to values of ``kind``'s type."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return types.CPointer(kind)(address, kind), codegen


@kernel
def _vector_at(address, length, kind):
    return numba.carray(_pointer(address, kind), (length,))


@entry(vec="boolean(intp, intp, intp, intp, intp, {t})")
def running_keep_finite(mean_at, var_at, previous_at, channels, count_at, kind):
    """Called right after an in-place update of the running statistics, with the addresses
    of ``running_mean (C,)``, ``running_var (C,)``, ``previous (2C,)`` (their values before
    the update, mean then var) and of the int64 ``num_batches_tracked`` (0: none); ``kind``
    is any value of the element type. (Addresses, not arrays: making the four arrays costs
    more than the check.) If the update made the statistics non-finite while ``previous``
    is finite, copy ``previous`` back and return False; otherwise count the batch and
    return True."""
    running_mean = _vector_at(mean_at, channels, kind)
    running_var = _vector_at(var_at, channels, kind)
    previous = _vector_at(previous_at, 2 * channels, kind)
    if not (_all_finite(running_mean) and _all_finite(running_var)) and _all_finite(previous):
        running_mean[:] = previous[:channels]
        running_var[:] = previous[channels:]
        return False
    if count_at != 0:
        _vector_at(count_at, 1, np.int64(0))[0] += 1
    return True
