"""One local Ray for the transfer tests (prepare and the contamination check use it)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def ray_local():
    import ray

    if not ray.is_initialized():
        # "local": a new instance, never another Ray found running on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
