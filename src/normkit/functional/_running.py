"""The running-statistics rule, the single source of truth for every layer that tracks them.

torch's convention (the opposite of Keras/Flax, whose ``momentum`` is the decay)::

    running_mean = (1 - f) * running_mean + f * batch_mean
    running_var  = (1 - f) * running_var  + f * batch_var * n / (n - 1)    # unbiased
    f = momentum,  or 1 / (num_batches_tracked + 1) when momentum is None (cumulative average)

Normalization itself uses the biased variance; only the stored estimate is unbiased. A batch
with NaN/Inf statistics leaves the buffers and ``num_batches_tracked`` untouched and raises
:class:`NonFiniteStatisticsWarning` (torch would store NaN). The rule runs as the registered
op ``normkit::running_stats_update`` (:mod:`normkit.backends.running`), the same code in eager
mode and under ``torch.compile``.
"""

from __future__ import annotations

from torch import Tensor

from normkit._shared import NonFiniteStatisticsWarning
from normkit.functional import _validate as v

__all__ = ["NonFiniteStatisticsWarning", "update_running_stats"]


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    count: int,
    momentum: float | None,
    num_batches_tracked: Tensor | None = None,
    name: str = "batch_norm",
) -> None:
    """Fold one batch's statistics into the running estimates, in place.

    Args:
        running_mean, running_var: ``(C,)`` buffers, updated in place (either may be None).
        batch_mean, batch_var: ``(C,)`` batch mean and **biased** batch variance.
        count: values per channel ``n`` behind the batch statistics (Bessel: ``n / (n - 1)``;
            ghost batch norm passes an effective, fractional count).
        momentum: update factor, or ``None`` for the cumulative average (needs
            ``num_batches_tracked``).
        num_batches_tracked: 0-d long buffer, incremented in place when given.
        name: layer name for the warning.
    """
    v.check_cumulative_average(momentum, running_mean, running_var, num_batches_tracked, name)
    from normkit.backends.running import running_stats_update

    running_stats_update(
        running_mean, running_var, num_batches_tracked, batch_mean.detach(), batch_var.detach(),
        float(count), momentum, name,
    )  # fmt: skip
