"""Pretraining on real MLflow (SQLite) and real shards prepared from a generated winter21
miniature, through the in-process core (the whole run: MLflow, checkpoints on run storage,
registration): the 21K-P loss with Mixup/CutMix, EMA and accumulation; and bad inputs refused
before any Ray work. FSDP2 on real Ray Train is test_custom_task.py's; the whole path pretrain ->
register -> fine-tune -> eval -> pull -> load on Ray Train is the e2e demo test's
(tests/e2e/test_cli.py)."""

from __future__ import annotations

import pytest
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
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("HYPERNYM_HOME", str(root / "home"))
    make_winter21(root / "raw", images_per_class=24, image_size=(96, 80), seed=1)
    make_digits_folder(root / "digits-raw", size=16)
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw"), "output": str(root / "mini21k"),
        "val_per_class": 4, "min_per_class": 0, "image_size": 40, "resize": "shorter",
        "shard_samples": 64,
    }), show_progress=False)
    # The demo's groups are classes too: toy dog above Chihuahua..., a two-level hierarchy.
    from hypernym.data.demo import DEMO_GROUPS, DEMO_SYNSETS

    groups = [name.split()[-1] for name in DEMO_GROUPS]
    make_winter21(root / "raw-sem", images_per_class=24, image_size=(96, 80), seed=1,
                  classes=DEMO_SYNSETS + groups)
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw-sem"), "output": str(root / "semantic"),
        "val_per_class": 4, "min_per_class": 0, "image_size": 40, "resize": "shorter",
        "shard_samples": 64,
    }), show_progress=False)
    prepare(parse_recipe({  # flat classes: for the bad-input checks
        "kind": "prepare", "source": str(root / "digits-raw"), "output": str(root / "digits"),
        "val_per_class": 10, "min_per_class": 0, "image_size": 32, "shard_samples": 256,
    }), show_progress=False)
    yield {"root": root}
    ray.shutdown()
    mp.undo()


def train_recipe(kind: str, path, **extra) -> dict:
    return {
        "kind": kind, "name": extra.pop("name", f"test-{kind}"), "experiment": "tests",
        "data": {"path": str(path), "img_size": 32, "batch_size": 16},
        "model": {"arch": "resnet10t"},
        "optim": {"lr": 3e-3, "warmup_epochs": 0},
        "train": {"epochs": 3, "log_every": 2},
        "scaling": {"num_workers": 2},
        **extra,
    }


def test_semantic_softmax_with_ema_and_accumulation(workspace, monkeypatch):
    """The 21K-P loss on a two-level hierarchy, with Mixup/CutMix, model EMA, gradient
    accumulation and system metrics, in one process; the registered version carries the EMA
    weights of the best epoch, the hierarchy and lineage."""
    from mlflow.tracking import MlflowClient

    from hypernym.registry.models import load_backbone, load_card, resolve
    from hypernym.settings import get_settings
    from hypernym.train import run_training

    monkeypatch.setenv("HYPERNYM_HOME", str(workspace["root"] / "home"))
    settings = get_settings()
    result = run_training(parse_recipe(train_recipe(
        "pretrain", workspace["root"] / "semantic", name="test-semantic",
        train={"epochs": 3, "log_every": 2, "loss": "semantic", "label_smoothing": 0.1,
               "ema_decay": 0.9, "accum_steps": 2, "system_metrics_s": 1,
               "keep_checkpoints": 10, "mixup_alpha": 0.8, "cutmix_alpha": 1.0},
        registry={"name": "bb-semantic", "alias": "candidate", "select": "best",
                  "weights": "ema"},
    )), show_progress=False, in_process=True)

    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == "0.003"
    fingerprint = workspace_manifest(workspace, "semantic").fingerprint
    assert run.data.tags["hypernym.dataset_fingerprint"] == fingerprint
    losses = [m.value for m in client.get_metric_history(result.run_id, "train/loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    metrics = run.data.metrics
    assert 0.0 <= result.metrics["val/top1"] <= 1.0 and "val/top5" in result.metrics
    for key in ("val/semantic_top1", "val/semantic_top1_level0", "val/semantic_top1_level1",
                "val_ema/top1", "val_ema/semantic_top1", "train/images_per_s_window"):
        assert 0.0 <= metrics[key], key
    # 20 classes, one worker x batch 16 x 2 batches per optimizer step.
    train_samples = sum(s.samples for s in workspace_manifest(workspace, "semantic")
                        .splits["train"])
    assert metrics["progress/step"] == 3 * -(-(train_samples // 16) // 2)  # ceil
    assert any(key.startswith("system/") for key in metrics), sorted(metrics)
    # prepare mixes classes across shards, the reader's buffer within them: batches hold about
    # as many classes as random draws would
    assert 0.8 < metrics["data/batch_mixing"] < 1.2
    inputs = client.get_run(result.run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "semantic"

    version = resolve("bb-semantic@candidate", settings=settings)
    assert version.tags["run_id"] == result.run_id
    assert version.tags["dataset_fingerprint"] == fingerprint
    card = load_card("bb-semantic@candidate", settings=settings)
    assert card.loss == "semantic" and card.weights == "ema"
    # weights: ema, select: best registers the EMA of the epoch with the best val_ema/top1
    history = [m.value for m in client.get_metric_history(result.run_id, "val_ema/top1")]
    best_epoch = history.index(max(history)) + 1
    assert card.selected == {"select": "best", "epoch": best_epoch, "metric": "val_ema/top1",
                             "value": max(history), "weights": "ema",
                             "candidates": {"ema": max(history)}}
    from pathlib import Path

    from hypernym.train.checkpoint import load_state

    epoch_state = load_state(Path(result.checkpoint_path).parent / f"epoch-{best_epoch:04d}")
    registered = load_backbone("bb-semantic@candidate", settings=settings).state_dict()
    assert all(torch.equal(registered[k], v) for k, v in epoch_state["ema"].items())
    assert card.hierarchy["kind"] == "wordnet"
    assert card.hierarchy["class_paths"]["n02085620"][-2:] == ["n02085374", "n02085620"]
    model = load_backbone("bb-semantic@candidate", settings=settings).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 20)


def workspace_manifest(workspace, name):
    from hypernym.data.manifest import read_manifest

    return read_manifest(str(workspace["root"] / name))


def test_bad_inputs_fail_before_ray_work(workspace, tmp_path, monkeypatch):
    from hypernym.train import run_training

    with pytest.raises(HypernymError, match="manifest"):
        run_training(parse_recipe(train_recipe("pretrain", tmp_path / "nothing")))
    with pytest.raises(HypernymError, match="batch"):
        run_training(parse_recipe({
            **train_recipe("pretrain", workspace["root"] / "mini21k"),
            "data": {"path": str(workspace["root"] / "mini21k"), "batch_size": 4096},
        }))
    with pytest.raises(HypernymError, match="train.loss: ce"):  # digits have no hierarchy
        run_training(parse_recipe(train_recipe(
            "pretrain", workspace["root"] / "digits", train={"loss": "semantic"})))
    with pytest.raises(HypernymError, match="no-such-model"):
        run_training(parse_recipe(train_recipe(
            "finetune", workspace["root"] / "digits", backbone="no-such-model@x")))
    # a keyword timm's model does not take: refused in the driver, before an MLflow run (a run
    # that dies on its workers ends FAILED: test_resume.py)
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings

    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    with pytest.raises(HypernymError, match="model.kwargs: .*unexpected keyword.*no_such_arg"):
        run_training(parse_recipe(train_recipe(
            "pretrain", workspace["root"] / "mini21k", name="bad-kwargs",
            model={"arch": "resnet10t", "kwargs": {"no_such_arg": 1}})))
    client = MlflowClient(get_settings().tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "attributes.run_name = 'bad-kwargs'")


def test_a_failed_run_resumes_in_process_exactly_once(workspace, tmp_path, monkeypatch):
    """A run that fails mid-epoch (its task raises at the 10th step) ends FAILED; resumed in
    process, it continues from its last checkpoint on run storage, in the same MLflow run, and
    the sample trace shows every sample of both epochs trained exactly once."""
    from mlflow.tracking import MlflowClient

    from hypernym.data.dataset import open_dataset
    from hypernym.settings import get_settings
    from hypernym.train import build_task, run_training
    from tests.integration.train.trace import attempts, check_exactly_once, surviving_history

    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(tmp_path / "trace"))
    recipe = parse_recipe(train_recipe(
        "pretrain", workspace["root"] / "mini21k", name="resume-in-process",
        data={"path": str(workspace["root"] / "mini21k"), "img_size": 32, "batch_size": 16},
        train={"epochs": 2, "checkpoint_every": 4, "keep_checkpoints": 2,
               "system_metrics_s": None}))
    dataset = open_dataset(recipe.data.path)
    task = build_task(recipe, dataset)
    calls, loss = [0], task.loss

    def failing(model, images, target):
        calls[0] += 1
        if calls[0] == 10:
            raise RuntimeError("a lost device")
        return loss(model, images, target)

    task.loss = failing
    with pytest.raises(RuntimeError, match="a lost device"):
        run_training(recipe, task=task, show_progress=False, in_process=True)
    client = MlflowClient(get_settings().tracking_uri)
    [failed] = client.search_runs([client.get_experiment_by_name("tests").experiment_id],
                                  "attributes.run_name = 'resume-in-process'")
    assert failed.info.status == "FAILED"

    result = run_training(recipe, resume=failed.info.run_id, show_progress=False,
                          in_process=True)
    assert result.run_id == failed.info.run_id
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert attempts(tmp_path / "trace") == {"00000000", "00000008"}  # from the step-8 checkpoint
    check_exactly_once(surviving_history(tmp_path / "trace"), dataset.num_samples("train"), [1])
