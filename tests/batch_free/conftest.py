"""The zoo's stand-in fixture for the converter tests (timm importable by its real name)."""

from tests.zoo.fixtures import stand_in_packages

__all__ = ["stand_in_packages"]
