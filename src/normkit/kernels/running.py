"""The running-statistics update in one call (no parallelism: ``C`` values, a few us).

``running_update`` is the rule of :func:`normkit.functional._running.update_running_stats`
for float32/float64 buffers: when every batch statistic is finite it moves the buffers
towards the batch, ``r = lerp(r, s, f)`` with ``s = batch_mean`` and
``s = batch_var * bessel``, computed as torch's ``lerp_`` computes it (in the data type,
``r + f * (s - r)`` for ``|f| < 0.5``, else ``s - (s - r) * (1 - f)``) and returns True;
otherwise it leaves the buffers untouched and returns False. Length-0 buffers stand for
absent ones (the batch statistic is still checked).
"""

from __future__ import annotations

import numpy as np

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
