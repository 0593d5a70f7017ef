"""Shared fixtures: the Sphinx test roots live in tests/roots/."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def rootdir():
    return Path(__file__).parent / "roots"
