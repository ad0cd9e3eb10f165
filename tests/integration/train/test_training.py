"""Pretrain -> register -> fine-tune -> load, on real Ray Train (2 CPU workers, gloo), real MLflow
(SQLite) and real shards prepared from a generated winter21 miniature."""

from __future__ import annotations

import pytest
import timm
import torch

from hypernym.config import parse_recipe
from hypernym.errors import HypernymError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Prepared datasets and a running local Ray, shared by the tests of this module."""
    import ray

    from hypernym.data.demo import make_digits_folder, make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("train")
    if not ray.is_initialized():  # before prepare(), which would start one of its own
        ray.init(num_cpus=2, include_dashboard=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("HYPERNYM_HOME", str(root / "home"))
    make_winter21(root / "raw", images_per_class=24, image_size=(96, 80), seed=1)
    make_digits_folder(root / "digits-raw", size=16)
    pre = prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw"), "output": str(root / "mini21k"),
        "val_per_class": 4, "min_per_class": 0, "image_size": 40, "resize": "shorter",
        "shard_samples": 64,
    }), show_progress=False)
    fine = prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "digits-raw"), "output": str(root / "digits"),
        "val_per_class": 10, "min_per_class": 0, "image_size": 32, "shard_samples": 256,
    }), show_progress=False)
    yield {"root": root, "pre": pre, "fine": fine}
    ray.shutdown()
    mp.undo()


def train_recipe(kind: str, path, **extra) -> dict:
    return {
        "kind": kind, "name": f"test-{kind}", "experiment": "tests",
        "data": {"path": str(path), "img_size": 32, "batch_size": 16},
        "model": {"arch": "resnet10t"},
        "optim": {"lr": 3e-3, "warmup_epochs": 0},
        "train": {"epochs": 3, "log_every": 2},
        "scaling": {"num_workers": 2},
        **extra,
    }


def test_pretrain_register_finetune_load(workspace, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.registry.models import load_backbone, resolve
    from hypernym.settings import get_settings
    from hypernym.train.trainer import run_training

    monkeypatch.setenv("HYPERNYM_HOME", str(workspace["root"] / "home"))
    settings = get_settings()
    pre = run_training(parse_recipe(train_recipe(
        "pretrain", workspace["root"] / "mini21k", registry={"name": "bb", "alias": "candidate"},
    )), show_progress=False)

    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(pre.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.003"
    assert run.data.tags["hypernym.dataset_fingerprint"] == workspace["pre"].fingerprint
    losses = [m.value for m in client.get_metric_history(pre.run_id, "train/loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert 0.0 <= pre.metrics["val/top1"] <= 1.0 and "val/top5" in pre.metrics

    version = resolve("bb@candidate", settings=settings)
    assert version.tags["run_id"] == pre.run_id
    assert version.tags["dataset_fingerprint"] == workspace["pre"].fingerprint

    fine = run_training(parse_recipe(train_recipe(
        "finetune", workspace["root"] / "digits", backbone="bb@candidate",
        registry={"name": "bb-digits", "alias": "prod"},
    )), show_progress=False)
    fv = resolve("bb-digits@prod", settings=settings)
    assert fv.tags["parent"] == f"bb/{version.version}"
    model = load_backbone("bb-digits@prod", settings=settings)
    assert model.num_classes == 10
    assert fine.metrics["val/top1"] > 0.2  # ten classes: chance is 0.1

    # The fine-tune started from the backbone: its first conv layer (never the head) moved
    # only a little from the registered one, while a fresh init is far from both.
    backbone = load_backbone("bb@candidate", num_classes=0, settings=settings).eval()
    assert backbone(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
    first = "conv1.0.weight"
    start, tuned = backbone.state_dict()[first], model.state_dict()[first]
    fresh = timm.create_model("resnet10t", num_classes=10).state_dict()[first]
    assert (tuned - start).norm() < (fresh - start).norm()


def test_failed_worker_marks_run_failed(workspace, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings
    from hypernym.train.trainer import run_training

    monkeypatch.setenv("HYPERNYM_HOME", str(workspace["root"] / "home"))
    recipe = parse_recipe(train_recipe(
        "pretrain", workspace["root"] / "mini21k", model={"arch": "resnet10t",
                                                          "kwargs": {"no_such_arg": 1}},
    ))
    with pytest.raises(Exception, match="no_such_arg"):
        run_training(recipe, show_progress=False)
    client = MlflowClient(get_settings().tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("tests").experiment_id],
        filter_string="attributes.status = 'FAILED'",
    )
    assert runs, "a run that dies must end FAILED"


def test_bad_inputs_fail_before_ray_work(workspace, tmp_path):
    from hypernym.train.trainer import run_training

    with pytest.raises(HypernymError, match="manifest"):
        run_training(parse_recipe(train_recipe("pretrain", tmp_path / "nothing")))
    with pytest.raises(HypernymError, match="batch"):
        run_training(parse_recipe({
            **train_recipe("pretrain", workspace["root"] / "mini21k"),
            "data": {"path": str(workspace["root"] / "mini21k"), "batch_size": 4096},
        }))
    with pytest.raises(HypernymError, match="no-such-model"):
        run_training(parse_recipe(train_recipe(
            "finetune", workspace["root"] / "digits", backbone="no-such-model@x")))
