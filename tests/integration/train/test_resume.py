"""Fault tolerance and checkpoints that prove themselves, on real Ray Train (CPU workers, gloo):
a worker process killed mid-epoch, the run resumed by `run_training(resume=run_id)` with another
worker count, past a checkpoint truncated on storage. Every sample key each optimizer step
trained on is recorded (HYPERNYM_SAMPLE_TRACE), and the surviving history must train each
sample of each epoch once, none twice, none skipped beyond the stated remainder. (The automatic
restart of a worker group with max_failures > 0 is the rig scenario's,
tests/integration/cluster/test_rig.py.)

The run is kept on S3 (HYPERNYM_STORAGE=s3://..., moto's S3 server on 127.0.0.1): every restore
reads its checkpoint from the bucket, the damage is done to the objects there, and nothing is
written under the local ``<home>/runs``."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernym.config import parse_recipe
from tests.integration.train.trace import (
    BATCH,
    attempts,
    check_exactly_once,
    checkpoint_recorded,
    fit_in_thread,
    kill_a_worker_after,
    surviving_history,
    wait_until,
)
from tests.servers import moto_s3

pytestmark = pytest.mark.integration

EVERY = 5  # checkpoint every EVERY steps


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import ray

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("resume")
    with moto_s3("runs"):
        # Ray workers take the driver's environment (the S3 endpoint) when Ray starts.
        ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        make_winter21(root / "raw", images_per_class=16, image_size=(64, 56), seed=2)
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
        # three kept: a damaged latest checkpoint leaves two to fall back on
        "train": {"epochs": 2, "log_every": 5, "checkpoint_every": EVERY,
                  "keep_checkpoints": 3},
        "scaling": {"num_workers": workers, "max_failures": max_failures},
    })


def recorded(fs, run_dir: str) -> list[str]:
    """The checkpoints Ray Train's controller recorded for the run, oldest first."""
    from hypernym.train.verify import SNAPSHOT_FILE, recorded_names

    fs.invalidate_cache()
    return recorded_names(fs.cat_file(f"{run_dir}/{SNAPSHOT_FILE}"))


def step_of(fs, path: str) -> int:
    from hypernym.train.verify import read_manifest

    return read_manifest(path, fs=fs).step


def test_a_killed_run_resumes_from_s3_past_a_damaged_checkpoint(dataset, tmp_path, monkeypatch):
    """Two attempts of one run on Ray Train, its checkpoints on S3:
    1. 2 workers; rank 1 is killed past a mid-epoch checkpoint: with max_failures=0 the run
       ends FAILED, with one line naming what failed and the command that resumes it;
    2. the latest recorded checkpoint's ``state.pt`` is truncated on S3; `run_training(resume=)`
       with one worker warns that it is not whole, restores the checkpoint before it (the same
       on every rank) and finishes, in the same MLflow run.
    The steps after the fallback are trained again, once: the surviving history trains every
    sample of each epoch exactly once. `hypernym runs` (library side) reports the run in
    between: its checkpoints, the damaged one found by --verify, abandoned and mark-failed. (A
    checkpoint missing a file, and the in-process fallback: test_training.py.)"""
    from mlflow.tracking import MlflowClient

    from hypernym.data.storage import open_fs
    from hypernym.errors import HypernymError
    from hypernym.runs import list_runs, mark_failed, show_run
    from hypernym.settings import get_settings
    from hypernym.train import run_training
    from hypernym.train.recovery import RunFailed

    root, manifest = dataset
    trace = tmp_path / "trace"
    home = tmp_path / "home"
    monkeypatch.setenv("HYPERNYM_HOME", str(home))
    monkeypatch.setenv("HYPERNYM_STORAGE", "s3://runs/team/")
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(trace))
    settings = get_settings()
    assert settings.storage == "s3://runs/team"
    fs, _ = open_fs("s3://runs")
    snapshots = "runs/team/*/checkpoint_manager_snapshot.json"
    thread, out = fit_in_thread(recipe(root, workers=2, max_failures=0))
    # The kill once the controller has recorded a checkpoint: the resumed attempt starts there
    # (the trace tells attempts apart by their first step).
    wait_until(lambda: checkpoint_recorded(fs, snapshots, EVERY * 2), timeout_s=240,
               what=f"the checkpoint of step {EVERY * 2}")
    kill_a_worker_after(trace, step=EVERY * 2)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert len(attempts(trace)) == 1
    client = MlflowClient(settings.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FAILED"
    error = out["error"]
    print(f"the failed run's line: {error}")
    assert isinstance(error, RunFailed) and "\n" not in str(error), error
    assert str(error).startswith(f"run {run_id} (pretrain 'resume-test') failed: the worker "
                                 "group failed (scaling.max_failures 0 spent): rank ")
    assert str(error).endswith(f"Resume it from its last whole checkpoint: hypernym pretrain "
                               f"--resume {run_id}")
    assert run.data.tags["hypernym.failure"] == str(error)
    run_dir = f"runs/team/resume-test-{run_id[:12]}"
    assert run.data.tags["hypernym.storage"] == f"s3://{run_dir}"

    # `hypernym runs`: the failed run, its last checkpoint on S3; a driver gone without a word
    # (the run left RUNNING, its heartbeat old) is abandoned, and mark-failed closes it
    (view,) = list_runs(settings=settings)
    names = recorded(fs, run_dir)
    assert (view.record.run_id, view.state()) == (run_id, "failed")
    assert view.latest.name == names[-1] and view.latest.step == step_of(fs, f"{run_dir}/"
                                                                                f"{names[-1]}")
    client.set_terminated(run_id, "RUNNING")
    client.set_tag(run_id, "hypernym.heartbeat", "1000000000")
    assert list_runs(settings=settings)[0].state(stale_after_s=3600) == "running"  # metrics
    assert list_runs(settings=settings)[0].state(stale_after_s=1) == "abandoned"
    with pytest.raises(HypernymError, match=r"was heard from \d+ s ago.*--force"):
        mark_failed(run_id, reason="test: driver gone", settings=settings)  # metrics are recent
    closed = mark_failed(run_id, reason="test: driver gone", settings=settings, force=True)
    assert closed.status == "FAILED"
    assert closed.tags["hypernym.failure"].startswith("marked failed by hand: test: driver gone")

    # 2. the latest checkpoint truncated on S3: the resume falls back one checkpoint
    latest, before = names[-1], names[-2]
    data = fs.cat_file(f"{run_dir}/{latest}/state.pt")
    fs.pipe_file(f"{run_dir}/{latest}/state.pt", data[: len(data) // 2])
    damaged = show_run(run_id, settings=settings, verify=True).latest
    assert damaged.problem == f"state.pt is {len(data) // 2} bytes, its manifest says {len(data)}"
    start2 = step_of(fs, f"{run_dir}/{before}")
    with pytest.raises(HypernymError, match="no MLflow run"):
        run_training(recipe(root, workers=1, max_failures=0), resume="0" * 32)
    result = run_training(recipe(root, workers=1, max_failures=0), show_progress=False,
                          resume=run_id)
    assert result.run_id == run_id
    assert result.checkpoint_path.startswith(f"s3://{run_dir}/")
    assert not (home / "runs").exists(), "nothing may be kept under <home>/runs"
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["hypernym.restored_from"] == before
    assert finished.data.tags["hypernym.checkpoints_skipped"] == (
        f"{latest}: state.pt is {len(data) // 2} bytes, its manifest says {len(data)}")
    assert sorted(map(int, attempts(trace))) == [0, start2]
    check_exactly_once(surviving_history(trace), manifest.num_samples("train"), [2, 1])
    # one MLflow run; its history marks the resume, and its steps never go back
    assert [m.value for m in client.get_metric_history(run_id, "run/resumed")] == [1]
    steps = [m.step for m in client.get_metric_history(run_id, "progress/step")]
    assert max(steps) == result.metrics["progress/step"]
    # the worker's warning names the damaged checkpoint and what failed
    import ray

    logs = " ".join(p.read_text(errors="replace") for p in
                    Path(ray._private.worker._global_node.get_logs_dir_path()).glob("worker-*"))
    assert f"skipping checkpoint {run_dir}/{latest}: state.pt is {len(data) // 2} bytes" in logs
