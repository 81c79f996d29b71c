"""Pytest fixtures of the model zoo, importable by other test packages:
``from tests.zoo.fixtures import stand_in_packages`` in a conftest.py."""

from __future__ import annotations

import pytest

from tests.zoo import ecosystem

__all__ = ["stand_in_packages"]


@pytest.fixture
def stand_in_packages():
    """timm / torchvision importable by their real names for one test (stand-ins for the
    packages missing here), taken back afterwards. Yields the module names added."""
    added = ecosystem.install()
    try:
        yield added
    finally:
        ecosystem.uninstall()
