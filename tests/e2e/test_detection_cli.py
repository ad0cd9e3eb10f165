"""Detection as a user runs it: a COCO-layout miniature (generated glyph scenes) prepared,
fine-tuned with a detection recipe, evaluated with `hypernym eval --coco-results`, and the
results file read back by pycocotools to the figures the report printed and logged."""

from __future__ import annotations

import contextlib
import io
import re
import textwrap

import pytest

from tests.e2e.test_cli import cli

pytestmark = pytest.mark.e2e


def test_a_coco_layout_goes_in_and_its_coco_results_come_out(tmp_path):
    from mlflow.tracking import MlflowClient
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from hypernym.data.scenes import make_glyph_scenes

    home = tmp_path / "home"
    coco = make_glyph_scenes(tmp_path / "coco", images={"train": 48, "val": 16},
                             canvas=(64, 64), seed=3)
    proc = cli("prepare", "--source", str(coco), "--output", str(tmp_path / "ds"),
               "--set", "image_size=64", "--set", "min_per_class=0", home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "annotations (multi-label): train" in proc.stderr + proc.stdout
    recipe = tmp_path / "detect.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        kind: finetune
        name: coco-detector
        task: detection
        backbone: null
        data: {{path: {tmp_path / "ds"}, img_size: 64, batch_size: 8}}
        model: {{arch: resnet10t}}
        optim: {{lr: 0.001, warmup_epochs: 0}}
        train: {{epochs: 2, log_every: 2, system_metrics_s: null}}
        detection: {{detector: fcos, fpn_channels: 32}}
        registry: {{name: coco-detector}}
        """))
    proc = cli("finetune", str(recipe), "--in-process", home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stderr + proc.stdout
    assert "finetune finished" in out and "'val/map'" in out
    assert "registered coco-detector version 1" in out

    results = tmp_path / "out" / "preds.json"
    proc = cli("eval", "coco-detector@candidate", str(tmp_path / "ds"), "--coco-results",
               str(results), home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = float(re.search(r"│ map\s+│\s+([-\d.]+) │", proc.stdout).group(1))
    assert f"COCO results: {results}" in proc.stdout
    run_id = re.search(r"logged to MLflow run (\w+)", proc.stdout).group(1)

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(tmp_path / "out" / "preds_gt.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(results)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    logged = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(run_id).data.metrics
    assert evaluation.stats[0] == pytest.approx(logged["eval/map"], abs=1e-6)
    assert evaluation.stats[1] == pytest.approx(logged["eval/map_50"], abs=1e-6)
    assert round(evaluation.stats[0], 4) == pytest.approx(printed, abs=1e-4)
    assert len(truth.getImgIds()) == 16 and truth.loadCats(1)[0]["class_id"].startswith("n")
    # a classifier's evaluation does not take it
    proc = cli("eval", "coco-detector@candidate", str(tmp_path / "ds"), "--contamination",
               home=home)
    assert proc.returncode == 2 and "--contamination is for classifiers" in proc.stderr
