"""Fault tolerance on real Ray Train (CPU workers, gloo): a worker process killed mid-epoch, the
run restarted from its last mid-epoch checkpoint, automatically (same worker count) or by
`run_training(resume=run_id)` with another worker count. Every sample key each optimizer step
trained on is recorded (HYPERNYM_SAMPLE_TRACE), and the surviving history must train each sample
of each epoch once, none twice, none skipped beyond the stated remainder.

The run is kept on S3 (HYPERNYM_STORAGE=s3://..., moto's S3 server on 127.0.0.1): both restarts
read their checkpoint from the bucket, and nothing is written under the local ``<home>/runs``."""

from __future__ import annotations

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
        "train": {"epochs": 2, "log_every": 5, "checkpoint_every": EVERY},
        "scaling": {"num_workers": workers, "max_failures": max_failures},
    })


def test_a_killed_run_resumes_from_s3_with_fewer_workers(dataset, tmp_path, monkeypatch):
    """Two attempts of one run (the automatic restart of a worker group with max_failures > 0
    is the rig scenario's, tests/integration/cluster/test_rig.py):
    1. rank 1 is killed past a mid-epoch checkpoint: with max_failures=0 the run ends FAILED;
    2. `run_training(resume=run_id)` with one worker instead of two finishes it, from the
       checkpoint on S3, in the same MLflow run.
    The surviving history trains every sample of each epoch exactly once across both."""
    from mlflow.tracking import MlflowClient

    from hypernym.data.storage import open_fs
    from hypernym.errors import HypernymError
    from hypernym.settings import get_settings
    from hypernym.train import run_training

    root, manifest = dataset
    trace = tmp_path / "trace"
    home = tmp_path / "home"
    monkeypatch.setenv("HYPERNYM_HOME", str(home))
    monkeypatch.setenv("HYPERNYM_STORAGE", "s3://runs/team/")
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(trace))
    assert get_settings().storage == "s3://runs/team"
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
    assert "error" in out, "a failure with max_failures=0 fails the run"
    assert len(attempts(trace)) == 1
    client = MlflowClient(get_settings().tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"

    with pytest.raises(HypernymError, match="no MLflow run"):
        run_training(recipe(root, workers=1, max_failures=0), resume="0" * 32)
    result = run_training(recipe(root, workers=1, max_failures=0), show_progress=False,
                          resume=run.info.run_id)
    assert result.run_id == run.info.run_id
    assert result.checkpoint_path.startswith(f"s3://runs/team/resume-test-{run.info.run_id[:12]}/")
    assert not (home / "runs").exists(), "nothing may be kept under <home>/runs"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(attempts(trace)) == 2
    assert max(map(int, attempts(trace))) >= EVERY * 2, "resumed from the mid-epoch checkpoint"
    history = surviving_history(trace)
    check_exactly_once(history, manifest.num_samples("train"), [2, 1])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "progress/step")]
    assert steps == sorted(steps) and max(steps) == result.metrics["progress/step"]
