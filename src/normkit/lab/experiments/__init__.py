"""The experiments; importing this package registers them (in this order)."""

from normkit.lab.experiments import ics  # noqa: I001 - registration order is the listing order
from normkit.lab.experiments import batch_size, lr, placement, eval_gap
from normkit.lab.experiments import affine, inference_stats, dropout
from normkit.lab.experiments import sequence

__all__ = [
    "affine",
    "batch_size",
    "dropout",
    "eval_gap",
    "ics",
    "inference_stats",
    "lr",
    "placement",
    "sequence",
]
