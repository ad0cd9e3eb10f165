"""The package layout promises of DESIGN.md."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_platform_is_still_the_standard_library():
    assert hasattr(platform, "python_version")
    assert "site-packages" not in (platform.__file__ or "") or "lib" in platform.__file__
    assert Path(platform.__file__).parent == Path(subprocess.__file__).parent
    assert not (REPO / "platform" / "__init__.py").exists()


def test_import_hypernym_is_cheap():
    # The CLI imports hypernym before parsing arguments: torch/ray/mlflow must not load.
    code = ("import sys, hypernym, hypernym.config; "
            "print(sorted({'torch', 'ray', 'mlflow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_runs():
    exe = Path(sys.executable).parent / "hypernym"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("run", "prepare", "pretrain", "finetune", "demo", "submit", "jobs", "models"):
        assert command in out.stdout
