"""Shared paths and pyproject facts for the deployment tests (no cluster, no image build)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"


@pytest.fixture(scope="session")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def requirements(pyproject) -> dict:
    """Distribution name -> packaging Requirement, from [project].dependencies."""
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}
