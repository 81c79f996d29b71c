"""The experiments; importing this package registers them (in this order)."""

from normkit.lab.experiments import ics

__all__ = ["ics"]
