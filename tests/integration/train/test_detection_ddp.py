"""A detection fine-tune on Ray Train with two DDP workers (CPU, gloo): a worker is killed past a
mid-epoch checkpoint, Ray Train restarts the group from it (``max_failures: 1``), and the
surviving history trains every glyph scene of each epoch exactly once (the sample trace of
tests/integration/train/trace.py). The run is tracked and registered like any other."""

from __future__ import annotations

import pytest

from tests.detection import detection_recipe, prepare_scenes
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

pytestmark = pytest.mark.integration

EVERY = 2  # checkpoint every EVERY steps
TRAIN = 64  # scenes: 4 steps of 2 workers x 8 per epoch


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("detection-resume")
    return prepare_scenes(root, images={"train": TRAIN, "val": 8}, canvas=(64, 64))


def test_a_killed_ddp_detection_run_restarts_and_trains_each_scene_once(scenes, tmp_path,
                                                                        monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.data.storage import open_fs
    from hypernym.settings import get_settings

    trace = tmp_path / "trace"
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(trace))
    settings = get_settings()
    recipe = detection_recipe(scenes, backbone=None, epochs=2, img_size=64, batch_size=BATCH,
                              fpn_channels=32, name="detect-ddp", register="ddp-detector",
                              train={"checkpoint_every": EVERY, "log_every": 1},
                              scaling={"num_workers": 2, "max_failures": 1})
    thread, out = fit_in_thread(recipe)
    fs, _ = open_fs(str(settings.storage))
    snapshots = f"{settings.storage}/*/checkpoint_manager_snapshot.json"
    wait_until(lambda: checkpoint_recorded(fs, snapshots, EVERY), timeout_s=300,
               what=f"the checkpoint of step {EVERY}")
    kill_a_worker_after(trace, step=EVERY + 1)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert len(attempts(trace)) == 2, "the worker group restarted once"
    assert max(map(int, attempts(trace))) >= EVERY, "from the mid-epoch checkpoint"
    check_exactly_once(surviving_history(trace), TRAIN, [2, 2])
    run = MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["hypernym.task"] == "detection"
    assert result.metrics["progress/step"] == 2 * TRAIN // (2 * BATCH)
    assert "val/map" in result.metrics and result.registered.name == "ddp-detector"
