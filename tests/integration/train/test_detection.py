"""Detection fine-tuning end to end, in process: the demo's glyph backbone pretrained here (the
demo's recipe at a smaller budget), an FCOS fine-tune on glyph scenes from it, the registered
detector's card, lineage, report, pulled folder (rebuilt without hypernym), its MLflow pyfunc,
and Ray Serve answering a JPEG over HTTP with boxes. (Whether the backbone beats random init is
the benchmark's question: tests/benchmarks/detection.py, docs/detection.md.)

Ray runs only the prepare tasks and Ray Serve; training runs in this process
(`run_training(in_process=True)`). The module shares one MLflow home (explicit settings)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from types import SimpleNamespace

import pytest

from tests.detection import (
    FINETUNE,
    PRETRAIN,
    SCENES,
    detection_recipe,
    prepare_glyphs,
    prepare_scenes,
    pretrain_recipe,
)
from tests.integration.registry.helpers import settings_at
from tests.servers import free_port, local_ray, routed, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from hypernym.train import run_training

    root = tmp_path_factory.mktemp("detection")
    settings = settings_at(root / "home")
    with local_ray():  # prepare's tasks, Ray Serve
        glyphs = prepare_glyphs(root, images_per_class=PRETRAIN["images_per_class"],
                                img_size=PRETRAIN["img_size"])
        scenes = prepare_scenes(root, **SCENES)
        run_training(pretrain_recipe(glyphs, epochs=PRETRAIN["epochs"],
                                     img_size=PRETRAIN["img_size"]),
                     in_process=True, settings=settings, show_progress=False)
        yield SimpleNamespace(root=root, settings=settings, scenes=scenes, glyphs=glyphs)


@pytest.fixture(scope="module")
def finetunes(world):
    from hypernym.train import run_training
    from hypernym.transfer.evaluation import report_finetune

    out = {}
    for start, backbone, register in (("pretrained", "glyph-backbone@candidate",
                                       "glyph-detector"),):
        recipe = detection_recipe(world.scenes, backbone=backbone, register=register,
                                  name=f"detect-{start}", **FINETUNE)
        result = run_training(recipe, in_process=True, settings=world.settings,
                              show_progress=False)
        report = None if register is None else report_finetune(
            recipe, result.run_id, registered=result.registered, checkpoint=result.checkpoint,
            metrics=result.metrics, settings=world.settings)
        out[start] = SimpleNamespace(recipe=recipe, result=result, report=report)
    return out


def test_the_fine_tune_reports_every_coco_figure(finetunes):
    metrics = finetunes["pretrained"].result.metrics
    assert {"val/map", "val/map_50", "val/map_75", "val/map_small", "val/map_medium",
            "val/map_large", "val/mar_100"} <= set(metrics)
    assert 0.0 <= metrics["val/map"] <= metrics["val/map_50"] <= 1.0, metrics


def test_the_end_of_a_fine_tune_reports_coco_figures_and_draws_detections(world, finetunes):
    from mlflow.tracking import MlflowClient

    run = finetunes["pretrained"]
    report, metrics = run.report, run.result.metrics
    assert report is not None and report.samples == SCENES["images"]["val"]
    # the registered weights on the same images: the validation pass's figures
    assert report.figures["map"] == pytest.approx(metrics["val/map"], abs=2e-3)
    assert len(report.per_class) == 16 and sum(r["boxes"] for r in report.per_class) == \
        report.boxes
    client = MlflowClient(world.settings.tracking_uri)
    logged = client.get_run(run.result.run_id).data.metrics
    assert logged["eval/map_50"] == pytest.approx(report.figures["map_50"])
    names = {a.path for a in client.list_artifacts(run.result.run_id, "eval")}
    assert {"eval/predictions.png", "eval/per_class_ap.json", "eval/report.json"} <= names
    history = client.get_metric_history(run.result.run_id, "train/loss_classification")
    assert history, "the detector's loss parts are logged as train/loss_<part>"


def test_registered_with_lineage_and_rebuilt_without_hypernym(world, finetunes, tmp_path):
    from hypernym.registry.lineage import lineage
    from hypernym.registry.models import fetch_card, pull

    registered = finetunes["pretrained"].result.registered
    ref = f"{registered.name}/{registered.version}"
    card = fetch_card(ref, settings=world.settings)
    assert card.detection["detector"] == "fcos" and card.arch == "resnet10t"
    assert card.parent == "glyph-backbone/1" and card.num_classes == 16
    chain = lineage(ref, settings=world.settings)["chain"]
    kinds = [node["kind"] for node in chain]
    assert kinds == ["dataset", "run", "model_version", "dataset", "run", "model_version"]
    glyphs = json.loads((world.glyphs / "manifest.json").read_text())
    assert chain[0]["fingerprint"] == glyphs["fingerprint"]  # back to the pretraining data

    folder = pull(ref, tmp_path / "pulled", settings=world.settings)
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "card.json",
                                                   "README.md", "detector_model.py"}
    readme = (folder / "README.md").read_text()
    snippet = readme.split("```python\n")[1].split("```")[0].replace("DIR", str(folder))
    assert len(snippet.strip().splitlines()) == 5
    image = sorted((world.root / "raw-scenes" / "val").glob("*.jpg"))[0]
    snippet = snippet.replace("image.jpg", str(image))
    # the snippet as a user runs it, with hypernym not importable
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['hypernym'] = None\n"
                           + snippet], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'boxes': tensor(" in proc.stdout and "'labels'" in proc.stdout


def test_the_pyfunc_and_ray_serve_answer_a_jpeg_with_boxes(world, finetunes):
    from ray import serve

    from hypernym.serving.deployment import ServeConfig, serve_model

    registered = finetunes["pretrained"].result.registered
    images = sorted((world.root / "raw-scenes" / "val").glob("*.jpg"))[:2]
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]
    body = {"dataframe_split": {"columns": ["image"],
                                "data": [[encoded[0]], [encoded[1]], ["bm90IGFuIGltYWdl"]]}}
    port = free_port()
    # Ray already runs in this process (the module's), so Serve's own proxy: no flags to change
    url = serve_model(f"{registered.name}@candidate", ServeConfig(port=port, ingress="proxy"),
                      settings=world.settings).url
    try:
        wait_ready(url, timeout_s=120, accept=routed)
        answer = _post(url, body)
        low = _post(url, {**body, "params": {"score_threshold": 0.05}})
    finally:
        serve.shutdown()
    rows = answer["predictions"]
    width, height = SCENES["canvas"]
    assert rows[0]["error"] is None and rows[0]["boxes"], rows[0]
    for row in rows[:2]:
        assert len(row["boxes"]) == len(row["labels"]) == len(row["scores"])
        assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
                   for x0, y0, x1, y1 in row["boxes"])
        assert all(s >= 0.3 for s in row["scores"])  # the card's score threshold
        assert all(label.startswith("n") for label in row["labels"])  # synsets
    assert "image 2: " in rows[2]["error"]
    assert len(low["predictions"][0]["boxes"]) >= len(rows[0]["boxes"])

    # the registered pyfunc, loaded by MLflow where hypernym is not importable
    script = (
        "import sys, json, pandas as pd; sys.modules['hypernym'] = None\n"
        "import mlflow\n"
        f"model = mlflow.pyfunc.load_model('models:/{registered.name}@candidate')\n"
        f"frame = pd.DataFrame({{'image': {encoded[:1]!r}}})\n"
        "out = model.predict(frame)\n"
        "print(json.dumps(out.to_dict(orient='records')))\n"
        "print(json.dumps(model.metadata.get_params_schema().to_dict()))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": world.settings.tracking_uri}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(world.root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records, params = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    flat = [[c for box in r["boxes"] for c in box] for r in (records[0], rows[0])]
    assert flat[0] == pytest.approx(flat[1], abs=0.05)  # the same boxes from both servers
    assert records[0]["labels"] == rows[0]["labels"]
    assert params[0]["name"] == "score_threshold" and params[0]["default"] == 0.3


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_a_detector_is_not_a_backbone(world, finetunes):
    from hypernym.errors import HypernymError
    from hypernym.registry.models import load_backbone

    with pytest.raises(HypernymError, match="is a fcos detector, not a timm classifier"):
        load_backbone("glyph-detector@candidate", settings=world.settings)


def test_evaluation_writes_coco_results_that_pycocotools_scores_alike(world, finetunes,
                                                                        tmp_path):
    import contextlib
    import io

    from mlflow.tracking import MlflowClient
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from hypernym.errors import HypernymError
    from hypernym.transfer.evaluation import run_eval

    results = tmp_path / "out" / "preds.json"
    report, run_id = run_eval("glyph-detector@candidate", str(world.scenes),
                              coco_results=str(results), settings=world.settings)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(tmp_path / "out" / "preds_gt.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(results)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    logged = MlflowClient(world.settings.tracking_uri).get_run(run_id).data.metrics
    assert evaluation.stats[0] == pytest.approx(logged["eval/map"], abs=1e-6)
    assert evaluation.stats[1] == pytest.approx(report.figures["map_50"], abs=1e-6)
    assert len(truth.getImgIds()) == SCENES["images"]["val"]
    assert truth.loadCats(1)[0]["class_id"].startswith("n")  # the synset of class index 0
    with pytest.raises(HypernymError, match="--contamination is for classifiers"):
        run_eval("glyph-detector@candidate", str(world.scenes), contamination=True,
                 settings=world.settings)
