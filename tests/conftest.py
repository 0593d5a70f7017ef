"""Shared fixtures: the Sphinx test roots live in tests/roots/."""

from pathlib import Path

import pytest

# The test roots are Sphinx projects, not tests: their properties/ files are read by
# the build under test, never collected here.
collect_ignore_glob = ["roots/*"]


@pytest.fixture(scope="session")
def rootdir():
    return Path(__file__).parent / "roots"
