"""One local Ray for the transfer tests (prepare and the contamination check use it)."""

from __future__ import annotations

import pytest

from tests.servers import local_ray


@pytest.fixture(scope="package")
def ray_local():
    with local_ray():
        yield
