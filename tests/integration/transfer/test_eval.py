"""`hypernym eval` on a registered timm model and a prepared dataset whose classes are synsets:
the report's metrics, tables and images reach the MLflow run (read back with MlflowClient),
with the contamination found against the backbone's pretraining data (from its lineage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
from typer.testing import CliRunner

from hypernym.config import parse_recipe
from tests.integration.transfer.eval_report import read_eval_report
from tests.integration.transfer.planted import original

pytestmark = pytest.mark.integration

SYNSETS = ["n02085620", "n02085782", "n02123045", "n02123159", "n03100240"]  # dogs, cats, car


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ray_local):
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("eval")
    for c, synset in enumerate(SYNSETS):
        (root / "raw" / synset).mkdir(parents=True)
        for i in range(8):
            (root / "raw" / synset / f"{i}.jpg").write_bytes(original(c * 100 + i, 48, 80))
    prepare(parse_recipe({"kind": "prepare", "source": str(root / "raw"),
                          "output": str(root / "ds"), "val_per_class": 4, "min_per_class": 0,
                          "image_size": 32, "shard_samples": 16}), show_progress=False)
    return root / "ds"


def register(name, *, dataset_uri, manifest, parent=None, lineage=False):
    from hypernym.registry.card import ModelCard
    from hypernym.registry.models import register_model
    from hypernym.tracking import log_inputs, start_run

    run_id = start_run(experiment="t", run_name=name,
                       tags={"hypernym.dataset_fingerprint": manifest.fingerprint})
    if lineage:
        log_inputs(run_id, dataset_name=manifest.name, fingerprint=manifest.fingerprint,
                   uri=dataset_uri)
    model = timm.create_model("test_resnet", num_classes=len(manifest.classes)).eval()
    card = ModelCard(arch="test_resnet", num_classes=len(manifest.classes),
                     classes=[{"id": c.id, "name": c.name} for c in manifest.classes],
                     hierarchy=manifest.hierarchy, input_size=[3, 32, 32], mean=[0.5] * 3,
                     std=[0.25] * 3, task="finetune" if parent else "pretrain", run_id=run_id,
                     parent=parent, dataset={"uri": dataset_uri})
    return register_model(run_id=run_id, name=name, model=model, card=card, alias="candidate")


def test_eval_report_in_mlflow(dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    from hypernym.cli import app
    from hypernym.data.manifest import read_manifest
    from hypernym.settings import get_settings

    manifest = read_manifest(str(dataset))
    assert manifest.hierarchy["kind"] == "wordnet"
    # The backbone's training run names its dataset (here the same one: every val image is an
    # exact copy of itself, which the contamination check must report).
    register("bb", dataset_uri=str(dataset), manifest=manifest, lineage=True)
    register("ft", dataset_uri=str(dataset), manifest=manifest, parent="bb/1")

    result = CliRunner().invoke(app, ["eval", "ft@candidate", str(dataset), "--contamination"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for text in ("top1", "macro_f1", "ece", "per class", "accuracy by hierarchy level",
                 "20 exact and 0 near duplicates"):
        assert text in result.output, text

    client = MlflowClient(get_settings().tracking_uri)
    [run] = client.search_runs(client.get_experiment_by_name("hypernym").experiment_id,
                               "tags.`hypernym.kind` = 'eval'")
    assert run.data.tags["hypernym.model"] == "ft/1"
    assert run.info.status == "FINISHED"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [manifest.name]
    images, report = read_eval_report(client, run.info.run_id, tmp_path)
    for image, pixels in images.items():
        assert pixels.std() > 10, f"{image} is blank"
    cm = np.array(report["confusion"])
    assert cm.sum() == 20 and cm.shape == (5, 5)
    metrics = run.data.metrics
    assert metrics["eval/top1"] == pytest.approx(np.trace(cm) / 20)
    assert metrics["eval/samples"] == 20 and 0 <= metrics["eval/ece"] <= 1
    # WordNet levels, recomputed from the confusion matrix and the classes' paths: a cell
    # counts as right at depth L when truth and prediction share their depth-L ancestor
    paths = [manifest.hierarchy["class_paths"][s] for s in SYNSETS]
    levels = sorted(int(k.removeprefix("eval/level").removesuffix("_top1"))
                    for k in metrics if k.startswith("eval/level"))
    assert levels and levels[-1] == max(map(len, paths)) - 1
    for level in levels:
        rows = [t for t in range(5) if len(paths[t]) > level]
        right = sum(cm[t, p] for t in rows for p in range(5)
                    if len(paths[p]) > level and paths[p][level] == paths[t][level])
        assert metrics[f"eval/level{level}_top1"] == pytest.approx(right / cm[rows].sum())
    assert metrics["contamination/exact"] == 20 and metrics["eval/contamination_exact"] == 20
    per_class = client.download_artifacts(run.info.run_id, "eval/per_class.json", str(tmp_path))
    table = json.loads(open(per_class).read())
    assert [row[1] for row in table["data"]] == SYNSETS
