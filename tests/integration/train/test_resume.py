"""Fault tolerance on real Ray Train (CPU workers, gloo): a worker process killed mid-epoch, the
run restarted from its last mid-epoch checkpoint, automatically (same worker count) or by
`run_training(resume=run_id)` with another worker count. Every sample key each optimizer step
trained on is recorded (HYPERNYM_SAMPLE_TRACE), and the surviving history must train each sample
of each epoch once, none twice, none skipped beyond the stated remainder."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from hypernym.config import parse_recipe

pytestmark = pytest.mark.integration

BATCH, EVERY = 8, 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import ray

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("resume")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    make_winter21(root / "raw", images_per_class=24, image_size=(64, 56), seed=2)
    manifest = prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw"), "output": str(root / "ds"),
        "val_per_class": 2, "min_per_class": 0, "image_size": 36, "shard_samples": 37,
    }), show_progress=False)
    yield root, manifest
    ray.shutdown()


def recipe(root, *, workers: int, max_failures: int):
    return parse_recipe({
        "kind": "pretrain", "name": "resume-test", "experiment": "tests",
        "data": {"path": str(root / "ds"), "img_size": 32, "batch_size": BATCH},
        "model": {"arch": "resnet10t"}, "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "train": {"epochs": 2, "log_every": 5, "checkpoint_every": EVERY},
        "scaling": {"num_workers": workers, "max_failures": max_failures},
    })


def kill_a_worker_after(trace: Path, step: int) -> int:
    """SIGKILL the rank-1 worker of the first attempt once it has trained past ``step``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for path in trace.glob("from-00000000-rank1-pid*.txt"):
            lines = path.read_text().splitlines()
            if lines and int(lines[-1].split()[1]) >= step:
                pid = int(re.search(r"pid(\d+)", path.name).group(1))
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.05)
    raise AssertionError("training never reached the step to kill at")


def surviving_history(trace: Path) -> dict[int, list[int]]:
    """epoch -> sample ids trained, keeping for each step only the attempt whose model state
    survived: the latest attempt that started before the step."""
    steps: dict[int, dict[int, tuple[int, list[int]]]] = defaultdict(dict)  # start -> step -> ..
    for path in trace.glob("from-*.txt"):
        start = int(path.name.split("-")[1])
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


def check_exactly_once(history, total: int, world_sizes: list[int]) -> None:
    assert sorted(history) == [0, 1]
    for epoch, ids in history.items():
        assert len(ids) == len(set(ids)), f"epoch {epoch}: a sample was trained twice"
        assert set(ids) <= set(range(total))
        # the remainder of an epoch is under one step of the run that finished the epoch
        assert total - len(ids) < max(world_sizes) * BATCH, f"epoch {epoch} skipped samples"


def fit_in_thread(rec, **kwargs):
    from hypernym.train.trainer import run_training

    out = {}

    def target():
        try:
            out["result"] = run_training(rec, show_progress=False, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_killed_worker_restarts_from_mid_epoch_checkpoint(dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings

    root, manifest = dataset
    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(tmp_path / "trace"))
    thread, out = fit_in_thread(recipe(root, workers=2, max_failures=1))
    kill_a_worker_after(tmp_path / "trace", step=EVERY * 2 + 2)  # 2 steps past a checkpoint
    thread.join(timeout=600)
    assert "error" not in out, out.get("error")
    history = surviving_history(tmp_path / "trace")
    starts = {p.name.split("-")[1] for p in (tmp_path / "trace").glob("from-*.txt")}
    assert len(starts) == 2, "the worker group restarted once, from a mid-epoch checkpoint"
    check_exactly_once(history, manifest.num_samples("train"), [2])
    client = MlflowClient(get_settings().tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"], "one MLflow run across the restart"


def test_resume_a_failed_run_by_id_with_fewer_workers(dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.errors import HypernymError
    from hypernym.settings import get_settings
    from hypernym.train.trainer import run_training

    root, manifest = dataset
    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(tmp_path / "trace"))
    thread, out = fit_in_thread(recipe(root, workers=2, max_failures=0))
    kill_a_worker_after(tmp_path / "trace", step=EVERY * 3 + 1)
    thread.join(timeout=600)
    assert "error" in out, "with max_failures=0 a killed worker fails the run"
    client = MlflowClient(get_settings().tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"

    with pytest.raises(HypernymError, match="no MLflow run"):
        run_training(recipe(root, workers=1, max_failures=0), resume="0" * 32)
    result = run_training(recipe(root, workers=1, max_failures=0), show_progress=False,
                          resume=run.info.run_id)
    assert result.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    history = surviving_history(tmp_path / "trace")
    check_exactly_once(history, manifest.num_samples("train"), [2, 1])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "progress/step")]
    assert steps == sorted(steps) and max(steps) == result.metrics["progress/step"]
