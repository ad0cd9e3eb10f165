"""Shared fixtures of the integration tests."""

from __future__ import annotations

import pytest

from tests.servers import local_ray


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for the module's tests (prepare runs as Ray tasks)."""
    with local_ray():
        yield
