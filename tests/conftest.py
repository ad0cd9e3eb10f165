"""Shared test setup: every test gets its own hypernym home, and no ambient cluster settings."""

from __future__ import annotations

import os

import pytest

# Hermetic: a developer's shell may point at a real cluster or tracking server.
for _var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "HYPERNYM_HOME", "HYPERNYM_ARTIFACT_ROOT"):
    os.environ.pop(_var, None)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


# `make test` runs the suite on two pytest-xdist workers that take one module at a time in
# collection order (`--dist loadfile`). These modules take a minute or more each on a 2-core
# machine; started first, they run beside the short ones instead of last and alone. Slowest
# first, measured with `pytest --durations=0` (docs/benchmarks.md, "Suite and install").
SLOWEST_FIRST = (
    "tests/integration/cluster/test_rig.py",
    "tests/e2e/test_cli.py",
    "tests/e2e/test_gpu_check.py",
    "tests/integration/train/test_resume.py",
    "tests/e2e/test_distill.py",
    "tests/integration/transfer/test_sweep.py",
    "tests/integration/jobs/test_jobs.py",
    "tests/integration/train/test_detection_ddp.py",
    "tests/integration/train/test_custom_task.py",
    "tests/integration/train/test_detection.py",
    "tests/integration/train/test_distill.py",
)


def pytest_collection_modifyitems(config, items):
    """The slowest modules first (a stable sort: the rest keep their order); `@pytest.mark.gpu`
    tests run only where torch sees a CUDA device."""
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def hypernym_home(tmp_path, monkeypatch):
    """A fresh HYPERNYM_HOME per test (embedded MLflow DB, runs, logs)."""
    home = tmp_path / "hypernym-home"
    monkeypatch.setenv("HYPERNYM_HOME", str(home))
    return home
