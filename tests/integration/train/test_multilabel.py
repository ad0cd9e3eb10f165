"""Multi-label fine-tuning on generated glyph scenes, in one process (the core, real MLflow on
SQLite, real shards): a backbone pretrained on the demo's glyphs beats random init in
validation mAP at the same budget; the registered model's card holds its task and per-class
thresholds; its run holds the evaluation report; the served pyfunc answers with the labels over
their thresholds; `hypernym eval` reports mAP. Every fine-tuning mode trains the multi-label
head. (The probes' mAP: tests/unit/transfer/test_probe_multilabel.py.)"""

from __future__ import annotations

import pytest
import torch

from hypernym.config import parse_recipe

pytestmark = pytest.mark.integration

# The lead of the backbone at this test's budget, measured on seeds 0, 1, 2 of data.seed (head
# init, random init, crops, order): +3.6, +6.8 and +2.4 mAP points (the demo's own backbone
# leads by 18 points at the shipped recipe's budget: docs/benchmarks.md, "Multi-label"). Runs
# of one seed differ by about 1.5 points. The floor sits below the weakest measured seed.
MARGIN = 0.01


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    """The demo's glyphs as a pretraining set, and scenes of them as a multi-label one."""
    from hypernym.data.demo import DEMO_CLASSES, make_winter21
    from hypernym.data.prepare import prepare
    from hypernym.data.scenes import make_glyph_scenes

    root = tmp_path_factory.mktemp("multilabel")
    make_winter21(root / "raw-glyphs", images_per_class=40, image_size=(40, 40),
                  classes=DEMO_CLASSES)
    make_glyph_scenes(root / "raw-scenes", images={"train": 160, "val": 60}, canvas=(64, 64),
                      objects=(1, 3), object_size=(0.4, 0.65))
    common = {"kind": "prepare", "min_per_class": 0, "shard_samples": 128}
    prepare(parse_recipe({**common, "source": str(root / "raw-glyphs"),
                          "output": str(root / "glyphs"), "val_per_class": 4,
                          "image_size": 36, "resize": "shorter"}), show_progress=False)
    prepare(parse_recipe({**common, "source": str(root / "raw-scenes"),
                          "output": str(root / "scenes"), "image_size": 40}),
            show_progress=False)
    return root


def recipe(kind: str, path, **extra):
    return parse_recipe({
        "kind": kind, "name": f"ml-{kind}", "experiment": "multilabel",
        "data": {"path": str(path), "img_size": 32, "batch_size": 16, "crop_scale": [0.5, 1]},
        "model": {"arch": "resnet10t"},
        "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.01, "warmup_epochs": 0},
        "scaling": {"num_workers": 1}, **extra})


def scenes_recipe(path, backbone, *, seed=0, **extra):
    extra.setdefault("train", {"epochs": 6, "system_metrics_s": None, "mixup_alpha": 0.2})
    return recipe("finetune", path, task="multilabel", backbone=backbone,
                  data={"path": str(path), "img_size": 32, "batch_size": 16,
                        "crop_scale": [0.5, 1], "seed": seed}, **extra)


@pytest.mark.parametrize("mode, extra", [
    ("linear", {}), ("partial", {"partial_blocks": 1}),
    ("full", {"optim": {"opt": "adamw", "lr": 1e-3, "layer_decay": 0.7}})])
def test_every_finetune_mode_trains_the_multilabel_head(data, mode, extra):
    from hypernym.train import Trainer

    trainer = Trainer.from_recipe(scenes_recipe(data / "scenes", None, mode=mode, **extra))
    model = trainer.state.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = next(iter(trainer.loaders.train(0, trainer.state.progress)))
    assert batch.target.shape == (16, 16) and batch.target.dtype == torch.float32
    trainer.train_step([batch])
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    head = {k for k in moved if k.startswith("fc.")}
    assert head == {"fc.weight", "fc.bias"}, moved
    stem = {k for k in moved if k.startswith("conv1.")}
    assert bool(stem) == (mode == "full"), (mode, sorted(moved)[:8])
    if mode == "partial":
        assert any(k.startswith("layer4.") for k in moved) and not any(
            k.startswith("layer3.") for k in moved)
    figures = trainer.validate()
    assert {"val/map", "val/f1", "val/class_f1", "val/f1_tuned"} <= figures.keys()
    assert 0 <= figures["val/map"] <= 1


def test_backbone_beats_random_init_and_the_model_serves_its_labels(data, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from hypernym.cli import app
    from hypernym.recipes import run_recipe
    from hypernym.registry.models import load_card
    from hypernym.settings import get_settings
    from hypernym.train import run_training

    settings = get_settings()
    run_training(recipe("pretrain", data / "glyphs",
                        train={"epochs": 3, "system_metrics_s": None},
                        registry={"name": "glyphs"}), show_progress=False, in_process=True)
    tuned = run_recipe(scenes_recipe(data / "scenes", "glyphs", registry={"name": "scenes"}),
                       show_progress=False, in_process=True)
    scratch = run_recipe(scenes_recipe(data / "scenes", None), show_progress=False,
                         in_process=True)
    lead = tuned.metrics["val/map"] - scratch.metrics["val/map"]
    assert lead > MARGIN, (tuned.metrics, scratch.metrics)

    card = load_card("scenes", settings=settings)
    assert card.objective == "multilabel" and card.loss == "bce" and card.crop_mode == "squash"
    assert len(card.thresholds) == 16 and all(0 < t < 1 for t in card.thresholds)
    assert card.selected["metric"] == "val/map"

    client = MlflowClient(settings.tracking_uri)
    metrics = client.get_run(tuned.run_id).data.metrics
    assert metrics["eval/samples"] == 60 and metrics["eval/cardinality_true"] > 1
    assert metrics["eval/map"] == pytest.approx(metrics["val/map"], abs=0.02)
    names = {a.path for a in client.list_artifacts(tuned.run_id, "eval")}
    assert {"eval/pr_curve.png", "eval/cardinality.png", "eval/per_class.json"} <= names

    # the served model: the labels over their thresholds, most probable first
    images = _val_images(data / "scenes", 3)
    # from this module's home (no process-wide MLflow URI: later tests' servers inherit it)
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri("scenes", "1"))
    rows = model.predict({"image": images}).to_dict("records")
    assert len(rows) == 3
    for row in rows:
        assert row["error"] is None and row["probs"] == sorted(row["probs"], reverse=True)
        assert all(p >= t for p, t in zip(row["probs"], row["thresholds"], strict=True))
    assert sum(len(row["labels"]) for row in rows) >= 3  # scenes hold 1 to 3 glyphs

    result = CliRunner().invoke(app, ["eval", "scenes@candidate", str(data / "scenes")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for text in ("map", "per class", "labels per image", "eval/pr_curve.png"):
        assert text in result.output, text


def _val_images(path, count: int) -> list[str]:
    import base64

    from hypernym.data.manifest import read_manifest
    from hypernym.data.reader import read_members

    url = read_manifest(str(path)).shard_urls(str(path), "val")[0]
    members = read_members(url, members=("jpg",))
    return [base64.b64encode(fields["jpg"]).decode() for _, fields in
            (next(members) for _ in range(count))]
