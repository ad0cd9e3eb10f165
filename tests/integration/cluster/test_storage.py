"""Runs kept on S3 (HYPERNYM_STORAGE=s3://...) against moto's S3 server on 127.0.0.1: a short
pretrain checkpoints into the bucket, is resumed from there by run id and registered from its
last checkpoint there, and nothing is written under the local ``<home>/runs``."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from tests.servers import moto_s3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import ray

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    with moto_s3("runs") as endpoint:
        # Ray workers take the driver's environment when Ray starts: start a fresh one now.
        ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        root = tmp_path_factory.mktemp("storage")
        make_winter21(root / "raw", images_per_class=10, image_size=(48, 40), seed=5,
                      classes=["n02085620", "n02085782", "n02123045", "n02123159"])
        prepare(parse_recipe({
            "kind": "prepare", "source": str(root / "raw"), "output": str(root / "ds"),
            "val_per_class": 2, "min_per_class": 0, "image_size": 28, "shard_samples": 16,
        }), show_progress=False)
        yield endpoint, root
        ray.shutdown()


def recipe(root, *, epochs: int):
    return parse_recipe({
        "kind": "pretrain", "name": "on-s3", "experiment": "storage",
        "data": {"path": str(root / "ds"), "img_size": 24, "batch_size": 8, "loader_workers": 0},
        "model": {"arch": "resnet10t"}, "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "train": {"epochs": epochs, "log_every": 2, "checkpoint_every": 2},
        "scaling": {"num_workers": 1, "max_failures": 0},
        "registry": {"name": "on-s3-backbone", "alias": "candidate"},
    })


def test_checkpoints_resume_and_registration_on_s3(s3, tmp_path, monkeypatch):
    import fsspec
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings
    from hypernym.train.trainer import run_training
    from tests.integration.train.trace import attempts

    _, root = s3
    home = tmp_path / "home"
    monkeypatch.setenv("HYPERNYM_HOME", str(home))
    monkeypatch.setenv("HYPERNYM_STORAGE", "s3://runs/team/")
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(tmp_path / "trace"))
    assert get_settings().storage == "s3://runs/team"

    # One epoch, then the run is left unfinished, as when a client dies mid-run.
    first = run_training(recipe(root, epochs=1).model_copy(
        update={"registry": recipe(root, epochs=1).registry.model_copy(update={"name": None})}),
        show_progress=False)
    assert first.checkpoint_path.startswith("s3://runs/team/on-s3-"), first.checkpoint_path
    client = MlflowClient(get_settings().tracking_uri)
    client.set_terminated(first.run_id, "FAILED")
    steps_done = int(first.metrics["progress/step"])

    # Resume by run id with one more epoch: the state comes back from the bucket.
    result = run_training(recipe(root, epochs=2), show_progress=False, resume=first.run_id)
    assert result.run_id == first.run_id
    assert attempts(tmp_path / "trace") == {"00000000", f"{steps_done:08d}"}, \
        "the resumed run must start from the checkpoint in S3, not from step 0"
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert result.registered is not None and result.registered.alias == "candidate"

    fs = fsspec.filesystem("s3")
    objects = fs.find("runs/team")
    states = [p for p in objects if p.endswith("/state.pt")]
    assert states and all(p.startswith(f"runs/team/on-s3-{first.run_id[:12]}/") for p in states)
    assert result.checkpoint_path.removeprefix("s3://") + "/state.pt" in states
    assert not (home / "runs").exists(), "nothing may be kept under <home>/runs"
