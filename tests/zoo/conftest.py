"""Fixtures of the model zoo."""

from __future__ import annotations

import pytest

from tests.zoo import ecosystem


@pytest.fixture
def stand_in_packages():
    """timm / torchvision importable by their real names for the test (stand-ins for the
    ones missing here), taken back afterwards. Yields the module names added."""
    added = ecosystem.install()
    try:
        yield added
    finally:
        ecosystem.uninstall()
