"""`hypernym eval` on a digits model trained like the demo's (resnet10t fine-tuned on
scikit-learn's digits by the training loop's own parts, in this process to keep the test cheap,
and registered by the trainer's registration step). The report's numbers must agree with the
training loop's own validation of the same weights, and its confusion matrix and reliability
diagram must be images in the eval run, read back with MlflowClient."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hypernym.config import parse_recipe
from tests.integration.transfer.inprocess import finetune_in_process, register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits(tmp_path_factory, ray_local):
    from hypernym.data.demo import make_digits_folder
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("digits")
    make_digits_folder(root / "raw", size=16)
    # the demo's digits recipe (squish, val per class), at a smaller size
    prepare(parse_recipe({"kind": "prepare", "source": str(root / "raw"),
                          "output": str(root / "ds"), "source_format": "folder",
                          "val_per_class": 10, "min_per_class": 0, "image_size": 16,
                          "resize": "squish", "shard_samples": 512}), show_progress=False)
    return root / "ds"


def test_eval_of_a_trained_digits_model(digits, tmp_path):
    from mlflow.tracking import MlflowClient

    from hypernym.cli import app
    from hypernym.settings import get_settings

    settings = get_settings()
    run = finetune_in_process({
        # the demo's fine-tune recipe (demo.py), at 16 px for one epoch, from random init
        "kind": "finetune", "name": "digits", "experiment": "tests", "backbone": None,
        "model": {"arch": "resnet10t"},
        "data": {"path": str(digits), "img_size": 16, "batch_size": 32,
                 "crop_scale": [0.5, 1.0]},
        "optim": {"opt": "adamw", "lr": 2e-3, "weight_decay": 0.01, "warmup_epochs": 0},
        "train": {"epochs": 1},
        "registry": {"name": "digits", "alias": "candidate"},
    }, settings=settings)
    val_top1 = run.epochs[-1]["val/top1"]
    assert val_top1 > 0.3, run.epochs  # trained: chance is 0.1
    register(run, settings=settings)

    result = CliRunner().invoke(app, ["eval", "digits@candidate", str(digits)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for text in ("top1", "macro_f1", "ece", "per class", "most confused pairs",
                 "eval/confusion_matrix.png"):
        assert text in result.output, text
    assert "accuracy by hierarchy level" not in result.output  # digits are flat classes

    client = MlflowClient(settings.tracking_uri)
    [eval_run] = client.search_runs(client.get_experiment_by_name("hypernym").experiment_id,
                                    "tags.`hypernym.kind` = 'eval'")
    assert eval_run.data.tags["hypernym.model"] == "digits/1"
    metrics = eval_run.data.metrics
    # the same weights on the same split: the report agrees with the loop's own validation
    assert metrics["eval/samples"] == 100
    assert metrics["eval/top1"] == pytest.approx(val_top1, abs=1e-6)
    assert metrics["eval/top5"] == pytest.approx(run.epochs[-1]["val/top5"], abs=1e-6)

    eval_id = eval_run.info.run_id
    for image in ("eval/confusion_matrix.png", "eval/reliability_diagram.png"):
        with Image.open(client.download_artifacts(eval_id, image, str(tmp_path))) as img:
            assert img.format == "PNG" and min(img.size) > 200
            pixels = np.asarray(img.convert("L"))
        assert pixels.std() > 10, f"{image} is blank"
    report = json.loads(open(client.download_artifacts(eval_id, "eval/report.json",
                                                       str(tmp_path))).read())
    cm = np.array(report["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == 100 and cm.sum(axis=1).tolist() == [10] * 10
    assert np.trace(cm) / 100 == pytest.approx(metrics["eval/top1"])
    bins = json.loads(open(client.download_artifacts(
        eval_id, "eval/calibration_bins.json", str(tmp_path))).read())
    assert bins["data"], "the reliability diagram's bins are logged as a table"
