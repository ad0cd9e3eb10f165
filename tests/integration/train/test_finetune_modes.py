"""EMA selection and head initialisation, in one process (the core, real MLflow on SQLite, real
shards, checkpoints on run storage): a short pretrain with an EMA registers whichever of model
and EMA validates better, and a fine-tune on a subset of its synsets starts from the pretrained
head's rows, classifying far above chance before its first step (epoch 0), decoding on the
device."""

from __future__ import annotations

import shutil

import pytest
import torch

from hypernym.config import parse_recipe

pytestmark = pytest.mark.integration

SYNSETS = ["n02085620", "n02123045", "n01530575", "n02814533", "n02085782", "n02123159"]
SUBSET = ["n02814533", "n02085620", "n01530575"]  # three of them, in another order


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    import ray

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("ft")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    make_winter21(root / "raw", images_per_class=20, image_size=(48, 40), seed=3,
                  classes=SYNSETS)
    (root / "raw-sub").mkdir()
    for synset in SUBSET:  # the same images: the fine-tune's classes look as they did
        shutil.copy(root / "raw" / f"{synset}.tar", root / "raw-sub" / f"{synset}.tar")
    for raw, name in (("raw", "pre"), ("raw-sub", "sub")):
        prepare(parse_recipe({
            "kind": "prepare", "source": str(root / raw), "output": str(root / name),
            "val_per_class": 4, "min_per_class": 0, "image_size": 24, "resize": "shorter",
            "shard_samples": 64}), show_progress=False)
    yield root
    ray.shutdown()


def recipe(kind: str, path, **extra) -> dict:
    return {"kind": kind, "name": f"ft-{kind}", "experiment": "ft-tests",
            "data": {"path": str(path), "img_size": 24, "batch_size": 16,
                     "crop_scale": [0.6, 1.0]},
            "model": {"arch": "resnet10t"}, "optim": {"lr": 3e-3},
            "scaling": {"num_workers": 1}, **extra}


def test_ema_and_head_init(datasets, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.registry.models import load_backbone, load_card, resolve
    from hypernym.settings import get_settings
    from hypernym.train import run_training
    from hypernym.train.checkpoint import load_state
    from hypernym.train.model import build_classifier

    monkeypatch.setenv("HYPERNYM_HOME", str(datasets / "home"))
    settings = get_settings()
    client = MlflowClient(settings.tracking_uri)

    # 1. A 3-epoch run with a slow EMA: "auto" registers the better of model and EMA at the
    # best epoch (before: always the EMA, at chance after so few steps).
    pre = run_training(parse_recipe(recipe(
        "pretrain", datasets / "pre",
        train={"epochs": 3, "ema_decay": 0.99, "keep_checkpoints": 5, "system_metrics_s": None},
        registry={"name": "syn", "select": "best"})), show_progress=False, in_process=True)
    card = load_card("syn", settings=settings)
    history = {name: [m.value for m in client.get_metric_history(pre.run_id, name)]
               for name in ("val/top1", "val_ema/top1")}
    epoch = card.selected["epoch"]
    scores = {"model": history["val/top1"][epoch - 1], "ema": history["val_ema/top1"][epoch - 1]}
    assert card.selected["candidates"] == pytest.approx(scores)
    assert scores[card.weights] == max(scores.values()), (card.selected, history)
    assert card.selected["weights"] == card.weights
    assert max(max(v) for v in history.values()) == pytest.approx(card.selected["value"])
    version = resolve("syn", settings=settings)
    assert version.tags["weights"] == card.weights
    assert version.tags["weights_choice"].startswith(f"{card.weights} weights of epoch {epoch}")
    kept = load_state(settings.runs_dir / f"ft-pretrain-{pre.run_id[:12]}"
                      / f"epoch-{epoch:04d}")
    registered = load_backbone("syn", settings=settings).state_dict()
    assert all(torch.equal(registered[k], v) for k, v in kept[card.weights].items())

    # 2. The new head starts from the pretrained rows of the same synsets.
    pretrained_head = load_backbone("syn", settings=settings).get_classifier()
    ref = f"syn/{version.version}"
    built = build_classifier(parse_recipe(recipe("finetune", datasets / "sub", backbone="syn",
                                                 mode="linear")),
                             num_outputs=3, class_ids=SUBSET, backbone=ref, settings=settings)
    model = built.model
    pretrained_ids = [c["id"] for c in card.classes]  # the manifest's (sorted) order
    rows = [pretrained_ids.index(s) for s in SUBSET]
    head = model.get_classifier()
    assert torch.equal(head.weight, pretrained_head.weight[rows])
    assert torch.equal(head.bias, pretrained_head.bias[rows])
    assert built.plan.head_init_rows == 3

    # 3. ... so the fine-tune classifies before its first step: epoch 0 at step 0. It decodes
    # on the training device (the CPU here), with a loader process.
    data = {**recipe("finetune", datasets / "sub")["data"], "decode_on": "device",
            "loader_workers": 1}
    fine = run_training(parse_recipe(recipe(
        "finetune", datasets / "sub", backbone="syn", mode="linear", data=data,
        train={"epochs": 1, "system_metrics_s": None})), show_progress=False, in_process=True)
    start = [m for m in client.get_metric_history(fine.run_id, "val/top1") if m.step == 0]
    pre_top1 = max(history["val/top1"] + history["val_ema/top1"])
    assert start and start[0].value >= min(0.6, pre_top1), (start, pre_top1)  # chance: 1/3
    assert client.get_run(fine.run_id).data.metrics["finetune/head_init_rows"] == 3
