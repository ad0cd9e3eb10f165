"""Distillation as a user runs it: the example's command (teacher, `hypernym distill store`'s
library call, students without a teacher, online and from the store), then the CLI's store
command refusing a teacher that does not exist, and the distilled student's lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cli import assert_user_error, cli

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distill.py"

# The distilled students' leads over the student alone at the example's defaults, in points of
# held-out top-1, mean over seeds 0, 1, 2, on two 2-core machines of different CPU models
# (docs/distillation.md): online +10.5 and +9.8, store +10.0 and +4.3. A single seed is not
# enough: seed 0's store lead was +2.5 on one and +0.0 on the other. This test runs the three
# seeds (the students take seconds each) and holds each mean above a floor below the weakest.
ONLINE_FLOOR = 5.0
STORE_FLOOR = 2.0


def test_distillation_example_end_to_end(tmp_path):
    home = tmp_path / "home"
    # One thread per process: on a machine shared with other work, two OpenMP threads per
    # process wait on each other (measured 4x slower steps); the figures do not depend on it.
    env = {**os.environ, "HYPERNYM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    budget = ["seeds=3"]
    args = [a for setting in budget for a in ("--set", setting)]
    proc = subprocess.run([sys.executable, str(EXAMPLE), *args],
                          capture_output=True, text=True, timeout=900, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    for needle in ("distillation demo", "no teacher", "online", "store", "bytes per view"):
        assert needle in out, needle
    summary = json.loads((home / "distill-demo" / "summary.json").read_text())
    assert summary["lead"]["online"] >= ONLINE_FLOOR, summary
    assert summary["lead"]["store"] >= STORE_FLOOR, summary

    data = str(home / "distill-demo" / "data" / "glyphs")
    assert_user_error(cli("distill", "store", "no-such-teacher@candidate", data, "--views", "1",
                          "--topk", "1", home=home), "no-such-teacher")

    lineage = cli("models", "lineage", "hypernym-distill-store@candidate", home=home)
    assert lineage.returncode == 0, lineage.stderr
    text = lineage.stdout
    assert "distilled from teacher hypernym-distill-teacher/1" in text, text
    assert "teacher store" in text and "glyphs-store" in text, text
