"""A detection fine-tune on Ray Train with two DDP workers (CPU, gloo), killed and resumed: the
workers split each epoch's glyph scenes between them, a worker process is killed (SIGKILL)
past a mid-epoch checkpoint, Ray Train restarts the worker group from the last checkpoint its
controller recorded (``scaling.max_failures: 1``), and the run finishes, validated with COCO's
mAP and registered like any other. The sample trace (tests/integration/train/trace.py: every
rank's sample ids per optimizer step, per attempt) proves that the history that survived the
restart trained every scene of each epoch exactly once: the steps the killed attempt trained
past its checkpoint are trained again by the restarted attempt, and only those count.
(Resuming a FAILED run by ``--resume``, and a damaged checkpoint: test_resume.py.)"""

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
    trace_step,
    wait_until,
)

pytestmark = pytest.mark.integration

TRAIN = 96  # scenes: 6 steps of 2 workers x 8 per epoch
STEPS = 2 * TRAIN // (2 * BATCH)  # two epochs
EVERY = 2  # a checkpoint every 2 steps: steps 2 and 4 are mid-epoch


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("detection-ddp")
    return prepare_scenes(root, images={"train": TRAIN, "val": 8}, canvas=(64, 64))


def test_a_killed_ddp_detection_run_resumes_and_trains_every_scene_once(scenes, tmp_path,
                                                                         monkeypatch):
    import fsspec
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings

    trace = tmp_path / "trace"
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(trace))
    settings = get_settings()
    recipe = detection_recipe(scenes, backbone=None, epochs=2, img_size=64, batch_size=BATCH,
                              fpn_channels=32, name="detect-ddp", register="ddp-detector",
                              train={"log_every": 1, "checkpoint_every": EVERY},
                              scaling={"num_workers": 2, "max_failures": 1})
    thread, out = fit_in_thread(recipe)
    # Kill once the controller has recorded the first mid-epoch checkpoint, so that the
    # restarted group resumes from it, not from the start.
    fs = fsspec.filesystem("file")
    wait_until(lambda: checkpoint_recorded(fs, f"{settings.storage}/*/checkpoint_manager_"
                                               "snapshot.json", EVERY),
               timeout_s=240, what=f"the checkpoint of step {EVERY}")
    kill_a_worker_after(trace, step=EVERY + 1)
    killed_at = trace_step(trace)
    thread.join(timeout=600)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    result = out["result"]

    starts = sorted(map(int, attempts(trace)))
    assert len(starts) == 2 and starts[0] == 0, f"one restart, attempts from steps {starts}"
    resumed = starts[1]
    print(f"killed rank 1 after step {killed_at}; resumed from the checkpoint of step {resumed}")
    assert resumed % EVERY == 0 and 0 < resumed < STEPS, starts  # from a checkpoint
    assert killed_at > resumed, "the killed attempt trained past the checkpoint it resumed from"
    # the surviving history: each scene of each epoch once, across the two attempts
    check_exactly_once(surviving_history(trace), TRAIN, [2])
    run = MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["hypernym.task"] == "detection"
    assert result.metrics["progress/step"] == STEPS
    assert "val/map" in result.metrics and result.registered.name == "ddp-detector"
