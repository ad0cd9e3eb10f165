"""Runs the check's parts in order, each in its own process under a deadline, and writes the
results after every part.

Each part runs in its own process and process group (`hypernym.gpucheck.part`), so a part
that hangs (a collective waiting forever, Ray waiting for a GPU it cannot see) is killed
at its deadline with everything it started, and one that crashes (a CUDA error) takes nothing
else with it. A part whose inputs failed is skipped; so is one that would not fit in what is
left of the budget. The part processes are forked from one server process that imported
torch, timm, MLflow and Ray once (multiprocessing's forkserver, which has not touched CUDA), so
a part starts in a moment instead of importing them again. ``gpu-check.json`` is rewritten
after each part with ``"complete": false`` until the last one has run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypernym.gpucheck.config import GpuCheckConfig
from hypernym.gpucheck.report import cuda_paths, render_markdown

__all__ = ["PARTS", "PRELOAD", "Part", "run_gpu_check"]

_RESERVE_S = 5.0  # kept back from the budget to write the results
# Settings that would send a part to a shared cluster, tracking server or storage: the check
# tests this machine, in a home of its own.
_AMBIENT = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "HYPERNYM_STORAGE", "HYPERNYM_ARTIFACT_ROOT",
            "HYPERNYM_SHARED_FS")


@dataclass(frozen=True)
class Part:
    """One part: its function (``module:function``), what it needs, and its time bounds.

    Attributes:
        min_s: not started with less than this left (it could not finish).
        max_s: killed after this long.
    """

    name: str
    title: str
    function: str
    needs: tuple[str, ...] = ()
    min_s: float = 10.0
    max_s: float = 120.0


_P = "hypernym.gpucheck"
PARTS: tuple[Part, ...] = (
    Part("environment", "environment", f"{_P}.probes:environment", min_s=5, max_s=60),
    Part("cuda_probes", "CUDA probes", f"{_P}.probes:cuda_probes", min_s=10, max_s=90),
    Part("ceiling", "synthetic ceiling", f"{_P}.ceiling:ceiling", min_s=20, max_s=240),
    Part("data", "shards", f"{_P}.pipeline:make_data", min_s=20, max_s=180),
    Part("pretrain_loader", "pretrain, loader decode", f"{_P}.pipeline:pretrain_loader",
         ("data",), min_s=40, max_s=240),
    Part("pretrain_device", "pretrain, device decode", f"{_P}.pipeline:pretrain_device",
         ("data",), min_s=40, max_s=180),
    Part("fsdp", "FSDP2 smoke", f"{_P}.probes:fsdp_smoke", min_s=10, max_s=90),
    Part("finetune", "fine-tune + registration", f"{_P}.pipeline:finetune",
         ("pretrain_loader",), min_s=30, max_s=180),
    Part("eval", "hypernym eval", f"{_P}.pipeline:evaluate", ("finetune",), min_s=10,
         max_s=120),
    Part("serve", "serving", f"{_P}.serving:serve_comparison", ("pretrain_loader",),
         min_s=45, max_s=300),
)

# Imported once, in the forkserver every part is forked from (importing does not start CUDA).
PRELOAD = ("torch", "torchvision", "timm", "mlflow", "ray", "hypernym.gpucheck.part")


def run_gpu_check(config: GpuCheckConfig, out: Path, *, dry_run: bool,
                  only: list[str] | None = None, log=print,
                  parts: tuple[Part, ...] = PARTS,
                  preload: tuple[str, ...] = PRELOAD) -> dict[str, Any]:
    """Run every part (or ``only`` these and the parts they need) within
    ``config.budget_s``; write ``out/gpu-check.json`` and ``out/gpu-check.md``; return the
    results. ``preload``: modules the part processes' forkserver imports first (once per
    process that runs checks: the first call's list holds)."""
    if only:
        only = _with_needs(set(only), parts)
    started = time.monotonic()
    deadline = started + config.budget_s
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if work.exists():  # a fresh home, registry and data for every check
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    (work / "config.json").write_text(config.model_dump_json(indent=2))
    results: dict[str, Any] = {
        "complete": False, "mode": "cpu-dry-run" if dry_run else "gpu",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budget_s": config.budget_s, "config": config.model_dump(mode="json"), "parts": {}}
    for part in parts:
        if only and part.name not in only:
            continue
        left = deadline - time.monotonic() - _RESERVE_S
        missing = [n for n in part.needs if results["parts"].get(n, {}).get("status") != "ok"]
        if missing:
            entry = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
        elif left < part.min_s:
            entry = {"status": "skipped", "reason": f"budget: {left:.0f} s left, it needs "
                     f"{part.min_s:.0f} s or more"}
        else:
            log(f"{part.title} ...")
            entry = _run_part(part, work, timeout_s=min(part.max_s, left), preload=preload)
        results["parts"][part.name] = entry
        log(f"{part.title}: {entry['status']}" + (f" ({entry['seconds']:.0f} s)"
                                                   if "seconds" in entry else "")
            + (f": {entry.get('reason') or entry.get('error', '').splitlines()[-1]}"
               if entry["status"] != "ok" else ""))
        _write(results, out, started)
    results["complete"] = True
    _write(results, out, started)
    return results


def _with_needs(names: set[str], parts: tuple[Part, ...]) -> set[str]:
    by_name = {p.name: p for p in parts}
    todo, out = list(names), set()
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(by_name[name].needs)
    return out


def _run_part(part: Part, work: Path, *, timeout_s: float,
              preload: tuple[str, ...]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
    env["HYPERNYM_HOME"] = str(work / "home")
    log_path = work / "logs" / f"{part.name}.log"
    result_path = work / "parts" / f"{part.name}.json"
    began = time.monotonic()
    forks = multiprocessing.get_context("forkserver")
    forks.set_forkserver_preload(list(preload))  # takes effect when the forkserver starts
    proc = forks.Process(target=_part_process, name=f"gpu-check {part.name}",
                         args=(part.name, part.function, str(work), str(log_path), env))
    proc.start()
    proc.join(timeout_s)
    timed_out = proc.exitcode is None
    _end_group(proc)
    seconds = round(time.monotonic() - began, 1)
    if timed_out:
        return {"status": "failed", "seconds": seconds, "log": str(log_path),
                "error": f"timed out after {timeout_s:.0f} s (stopped); see {log_path}"}
    if result_path.exists():
        entry = json.loads(result_path.read_text())
        return {**entry, "seconds": seconds, "log": str(log_path)}
    tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
    return {"status": "failed", "seconds": seconds, "log": str(log_path),
            "error": f"exited with {proc.exitcode} without a result:\n" + "\n".join(tail)}


def _part_process(name: str, function: str, work: str, log_path: str,
                  env: dict[str, str]) -> None:
    """The part's process: a process group of its own, output to its log, the part's
    environment, then `hypernym.gpucheck.part.main`."""
    os.setsid()
    # as if started on its own: its own pools fork (a forkserver child would default to the
    # forkserver, which pickles what a DataLoader's workers get)
    multiprocessing.set_start_method(None, force=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                    if p and p not in sys.path]
    from hypernym.gpucheck.part import main

    main([name, function, work])
    sys.stdout.flush()
    sys.stderr.flush()


def _end_group(proc) -> None:
    """SIGTERM the part's process group (Ray, servers), SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    proc.join(5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(results: dict[str, Any], out: Path, started: float) -> None:
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["cuda_paths"] = cuda_paths(results)
    for name, text in (("gpu-check.json", json.dumps(results, indent=2, default=str)),
                       ("gpu-check.md", render_markdown(results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
