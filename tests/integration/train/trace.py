"""Reading the sample trace (HYPERNYM_SAMPLE_TRACE) of a training run that was interrupted.

Each rank of each worker-group attempt writes ``from-<first step>-rank<r>-pid<p>.txt``, a line
per optimizer step: ``epoch step id id ...``. The helpers here wait for a step, kill a worker,
and rebuild the history that survived the restarts, to prove every sample trained exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

BATCH = 8  # per-worker batch size of the fault-tolerance recipes


def first_step(path: Path) -> int:
    """The step a trace file's attempt started from (``from-<first step>-...``)."""
    return int(path.name.split("-")[1])


def trace_step(trace: Path, *, restarted: bool = False) -> int:
    """The highest step any rank of any attempt (``restarted``: of an attempt that started
    past step 0) has trained."""
    top = 0
    for path in trace.glob("from-*.txt"):
        if restarted and first_step(path) == 0:
            continue
        lines = path.read_text().splitlines()
        if lines:
            top = max(top, int(lines[-1].split()[1]))
    return top


def wait_for_step(trace: Path, step: int, *, rank: int = 1, timeout_s: float = 240,
                  restarted: bool = False) -> Path:
    """The trace file of ``rank`` in the first attempt (with ``restarted``: in a later one, a
    file that starts past step 0), once that rank has trained past ``step``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in trace.glob(f"from-*-rank{rank}-pid*.txt"):
            if (first_step(path) == 0) == restarted:
                continue
            lines = path.read_text().splitlines()
            if lines and int(lines[-1].split()[1]) >= step:
                return path
        time.sleep(0.05)
    raise AssertionError("training never reached the step to interrupt at")


def kill_a_worker_after(trace: Path, step: int, **wait) -> int:
    """SIGKILL the rank-1 worker once it has trained past ``step`` (``wait``: wait_for_step's
    options: which attempt, how long)."""
    pid = int(re.search(r"pid(\d+)", wait_for_step(trace, step, **wait).name).group(1))
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_until(check, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def checkpoint_recorded(fs, snapshots: str, step: int) -> bool:
    """Ray Train's controller has recorded the checkpoint of ``step`` in one of its
    ``checkpoint_manager_snapshot.json`` files (``snapshots``: a glob on ``fs``). Only then does
    a restart resume from it: a checkpoint a worker has uploaded but the controller has not yet
    collected from every rank is not restored, so a worker killed right after a checkpoint step
    may restart the group from the checkpoint before."""
    fs.invalidate_cache()  # s3fs caches listings
    return any(f"step-{step:08d}" in fs.cat_file(path).decode() for path in fs.glob(snapshots))


def surviving_history(trace: Path) -> dict[int, list[int]]:
    """epoch -> sample ids trained, keeping for each step only the attempt whose model state
    survived: the latest attempt that started before the step."""
    steps: dict[int, dict[int, tuple[int, list[int]]]] = defaultdict(dict)  # start -> step -> ..
    for path in trace.glob("from-*.txt"):
        start = first_step(path)
        for line in path.read_text().splitlines():
            epoch, step, *ids = map(int, line.split())
            entry = steps[start].setdefault(step, (epoch, []))
            entry[1].extend(ids)
    starts = sorted(steps)
    history: dict[int, list[int]] = defaultdict(list)
    last = max(step for s in starts for step in steps[s])
    for step in range(1, last + 1):
        owner = max(s for s in starts if s < step)
        epoch, ids = steps[owner][step]
        history[epoch].extend(ids)
    return history


def attempts(trace: Path) -> set[str]:
    """The first steps of the worker-group attempts that wrote to the trace."""
    return {p.name.split("-")[1] for p in trace.glob("from-*.txt")}


def check_exactly_once(history, total: int, world_sizes: list[int], epochs: int = 2) -> None:
    assert sorted(history) == list(range(epochs))
    for epoch, ids in history.items():
        assert len(ids) == len(set(ids)), f"epoch {epoch}: a sample was trained twice"
        assert set(ids) <= set(range(total))
        # the remainder of an epoch is under one step of the run that finished the epoch
        assert total - len(ids) < max(world_sizes) * BATCH, f"epoch {epoch} skipped samples"


def fit_in_thread(rec, **kwargs):
    from hypernym.train import run_training

    out = {}

    def target():
        try:
            out["result"] = run_training(rec, show_progress=False, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out
