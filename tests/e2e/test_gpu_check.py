"""`hypernym gpu-check` as a user runs it: without CUDA it says so and exits at once; with
--cpu-dry-run every part runs on the CPU at toy sizes (the training core in process, a real
MLflow registry, both real servers), so the check cannot rot between GPU sightings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hypernym.serving.ingress import find_haproxy

pytestmark = pytest.mark.e2e
HYPERNYM = str(Path(sys.executable).parent / "hypernym")


def _run(*args: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYPERNYM_HOME": str(cwd / "home"), "COLUMNS": "200"}
    return subprocess.run([HYPERNYM, "gpu-check", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_says_so_and_exits_at_once(tmp_path):
    began = time.monotonic()
    proc = _run("--out", str(tmp_path / "out"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device here" in proc.stderr and "--cpu-dry-run" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing checked, nothing written
    assert time.monotonic() - began < 60


def test_cpu_dry_run_runs_every_part(tmp_path):
    proc = _run("--cpu-dry-run", "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert results["complete"] and results["mode"] == "cpu-dry-run"
    parts = results["parts"]
    assert {name: e["status"] for name, e in parts.items()} == dict.fromkeys(
        ["environment", "cuda_probes", "ceiling", "data", "pretrain_loader", "pretrain_device",
         "fsdp", "finetune", "eval", "serve"], "ok")
    r = {name: e["result"] for name, e in parts.items()}
    assert r["ceiling"]["eager"]["images_per_s"] > 0 and r["ceiling"]["compiled"]["steps"] == 2
    for decode in ("pretrain_loader", "pretrain_device"):
        assert r[decode]["images_per_s"] > 0 and 0 <= r[decode]["data_wait_frac"] < 1
        assert r[decode]["ratio_to_ceiling"] > 0
    # The dry run samples every 0.5 s (a toy run lasts seconds); the device-decode run, the
    # shorter, may still end before its first sample is logged
    assert "system/cpu_utilization_percentage" in r["pretrain_loader"]["system_metrics"]
    assert r["pretrain_loader"]["registered"] == "gpucheck-backbone/1"
    assert r["finetune"]["registered"] == "gpucheck-finetuned/1"
    assert r["eval"]["samples"] == 8 and 0 <= r["eval"]["top1"] <= 1
    assert r["fsdp"]["units"] > 1 and len(r["fsdp"]["losses"]) == 3
    serve = r["serve"]
    # the GPU check's several replicas go through HAProxy (ray[serve] brings it on Linux; without
    # a binary, serve falls back to the proxy): the dry run asks for it on its one replica
    assert serve["ingress"].startswith("haproxy" if find_haproxy()[0] else "proxy")
    for runs in serve["runs"].values():
        assert all(run["ok"] > 0 and run["errors"] == 0 for run in runs)
    assert serve["comparison"]["best_any"]["ratio"] > 0
    paths = {row["path"]: row["status"] for row in results["cuda_paths"]}
    assert paths["pinned memory"] == "not run"  # no CPU twin
    assert paths["NCCL"] == paths["FSDP2 on a GPU"] == "ok"
    text = (tmp_path / "out" / "gpu-check.md").read_text()
    for heading in ("## Environment", "## Training throughput", "## Serving", "## CUDA-only"):
        assert heading in text
    assert "10 of 10 parts ok" in proc.stderr
