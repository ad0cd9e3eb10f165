"""Fault tolerance on real Ray Train (CPU workers, gloo): a worker process killed mid-epoch, the
run restarted from its last mid-epoch checkpoint, automatically (same worker count) or by
`run_training(resume=run_id)` with another worker count. Every sample key each optimizer step
trained on is recorded (HYPERNYM_SAMPLE_TRACE), and the surviving history must train each sample
of each epoch once, none twice, none skipped beyond the stated remainder."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from tests.integration.train.trace import (
    BATCH,
    attempts,
    check_exactly_once,
    fit_in_thread,
    kill_a_worker_after,
    surviving_history,
)

pytestmark = pytest.mark.integration

EVERY = 5  # checkpoint every EVERY steps


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import ray

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("resume")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
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
    assert len(attempts(tmp_path / "trace")) == 2, "one restart, from a mid-epoch checkpoint"
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
