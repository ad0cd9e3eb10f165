"""Shared test setup: every test gets its own hypernym home, and no ambient cluster settings."""

from __future__ import annotations

import os

import pytest

# Hermetic: a developer's shell may point at a real cluster or tracking server.
for _var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "HYPERNYM_HOME", "HYPERNYM_ARTIFACT_ROOT"):
    os.environ.pop(_var, None)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.gpu` tests run only where torch sees a CUDA device."""
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
