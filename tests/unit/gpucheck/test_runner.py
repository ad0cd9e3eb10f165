"""The check's runner: parts in their own processes, dependencies, failures, the deadline and
the budget, results written as it goes (real processes, fast stand-in parts)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypernym.gpucheck.config import GpuCheckConfig
from hypernym.gpucheck.runner import Part, run_gpu_check

REPO = Path(__file__).resolve().parents[3]
HELPERS = "tests.unit.gpucheck.parts_for_tests"
PRELOAD = ("hypernym.gpucheck.part",)  # the stand-in parts need neither torch nor Ray


def _env(monkeypatch):  # the part processes import the stand-ins from the repository
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), str(REPO / "platform"), os.environ.get("PYTHONPATH", "")]))


def test_parts_run_in_order_and_failures_stop_what_needs_them(tmp_path, monkeypatch):
    _env(monkeypatch)
    parts = (
        Part("first", "first", f"{HELPERS}:ok", min_s=0),
        Part("hangs", "hangs", f"{HELPERS}:hang", min_s=0, max_s=3),
        Part("breaks", "breaks", f"{HELPERS}:boom", min_s=0),
        Part("needs_hangs", "needs", f"{HELPERS}:ok", ("hangs",), min_s=0),
        Part("second", "second", f"{HELPERS}:ok", ("first",), min_s=0),
        Part("too_big", "too big", f"{HELPERS}:ok", min_s=10_000),
    )
    lines = []
    results = run_gpu_check(GpuCheckConfig.dry_run(), tmp_path, dry_run=True, parts=parts,
                            log=lines.append, preload=PRELOAD)
    p = results["parts"]
    assert p["first"]["status"] == "ok" and p["first"]["result"]["device"] == "cpu"
    assert p["hangs"]["status"] == "failed" and "timed out after 3 s" in p["hangs"]["error"]
    assert p["hangs"]["seconds"] < 30  # killed with its process group
    assert p["breaks"]["status"] == "failed"
    assert "ValueError: the part went wrong" in p["breaks"]["error"]
    assert p["needs_hangs"] == {"status": "skipped", "reason": "needs hangs"}
    assert p["second"]["result"]["before"] == ["first"]  # earlier results, failed ones left out
    assert p["too_big"]["status"] == "skipped" and "budget" in p["too_big"]["reason"]
    written = json.loads((tmp_path / "gpu-check.json").read_text())
    assert written["complete"] is True and written["mode"] == "cpu-dry-run"
    assert list(written["parts"]) == [part.name for part in parts]
    assert "| hangs | failed |" in (tmp_path / "gpu-check.md").read_text()
    assert any("timed out" in line for line in lines)


def test_the_budget_leaves_later_parts_out(tmp_path, monkeypatch):
    _env(monkeypatch)
    parts = (Part("a", "a", f"{HELPERS}:ok", min_s=0), Part("b", "b", f"{HELPERS}:ok",
                                                            min_s=20))
    results = run_gpu_check(GpuCheckConfig.dry_run(budget_s=20), tmp_path, dry_run=True,
                            parts=parts, log=lambda _: None, preload=PRELOAD)
    assert results["parts"]["a"]["status"] == "ok"
    assert results["parts"]["b"]["status"] == "skipped"
    assert results["wall_s"] < 20


def test_only_brings_in_what_a_part_needs(tmp_path, monkeypatch):
    _env(monkeypatch)
    parts = (Part("a", "a", f"{HELPERS}:ok", min_s=0), Part("b", "b", f"{HELPERS}:boom", min_s=0),
             Part("c", "c", f"{HELPERS}:ok", ("a",), min_s=0))
    results = run_gpu_check(GpuCheckConfig.dry_run(), tmp_path, dry_run=True, only=["c"],
                            parts=parts, log=lambda _: None, preload=PRELOAD)
    assert list(results["parts"]) == ["a", "c"]
    assert results["parts"]["c"]["result"]["before"] == ["a"]
