"""A detection fine-tune on Ray Train with two DDP workers (CPU, gloo): the workers split each
epoch's glyph scenes between them (the sample trace of tests/integration/train/trace.py: every
scene trained exactly once), their detectors' gradients are averaged, and the run is tracked,
validated with COCO's mAP and registered like any other. (Kill and resume are the core's, tested
with the classification task in tests/integration/train/test_resume.py.)"""

from __future__ import annotations

import pytest

from tests.detection import detection_recipe, prepare_scenes
from tests.integration.train.trace import BATCH, attempts, check_exactly_once, surviving_history

pytestmark = pytest.mark.integration

TRAIN = 32  # scenes: 2 steps of 2 workers x 8 per epoch


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("detection-ddp")
    return prepare_scenes(root, images={"train": TRAIN, "val": 8}, canvas=(64, 64))


def test_a_ddp_detection_run_splits_each_epoch_and_registers(scenes, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings
    from hypernym.train import run_training

    trace = tmp_path / "trace"
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(trace))
    settings = get_settings()
    recipe = detection_recipe(scenes, backbone=None, epochs=2, img_size=64, batch_size=BATCH,
                              fpn_channels=32, name="detect-ddp", register="ddp-detector",
                              train={"log_every": 1}, scaling={"num_workers": 2})
    result = run_training(recipe, show_progress=False)
    assert len(attempts(trace)) == 1, "one worker group, not restarted"
    check_exactly_once(surviving_history(trace), TRAIN, [2])
    run = MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["hypernym.task"] == "detection"
    assert result.metrics["progress/step"] == 2 * TRAIN // (2 * BATCH)
    assert "val/map" in result.metrics and result.registered.name == "ddp-detector"
