"""The experiments; importing this package registers them (in this order)."""

from normkit.lab.experiments import ics  # noqa: I001 - registration order is the listing order
from normkit.lab.experiments import batch_size, lr, placement, eval_gap

__all__ = ["batch_size", "eval_gap", "ics", "lr", "placement"]
