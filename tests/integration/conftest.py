"""Shared fixtures of the integration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for the module's tests (prepare runs as Ray tasks)."""
    import ray

    if not ray.is_initialized():
        # "local": a new instance, never another Ray found running on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
