"""Fixtures of the model zoo (defined in tests.zoo.fixtures)."""

from tests.zoo.fixtures import stand_in_packages

__all__ = ["stand_in_packages"]
