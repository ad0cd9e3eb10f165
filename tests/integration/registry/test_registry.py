"""Register, resolve, pull and load with real MLflow: embedded SQLite, and a real server."""

from __future__ import annotations

import multiprocessing as mp
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from mlflow import MlflowClient

from hypernym.errors import HypernymError
from hypernym.registry.card import ModelCard
from hypernym.registry.models import (
    load_backbone,
    load_card,
    pull,
    register_model,
    resolve,
    set_version_tags,
)
from hypernym.settings import get_settings
from hypernym.tracking import RunLogger, start_run
from tests.servers import start_mlflow_server

pytestmark = pytest.mark.integration


def card(run_id: str, **kw) -> ModelCard:
    return ModelCard(arch="resnet10t", num_classes=5, input_size=[3, 32, 32], mean=[0.4] * 3,
                     std=[0.2] * 3, task="pretrain", run_id=run_id,
                     dataset={"name": "d", "fingerprint": "f" * 64, "uri": "/d"}, **kw)


def _log_from_child(run_id: str, uri: str) -> None:
    logger = RunLogger(run_id, tracking_uri=uri)
    logger.log_metrics({"loss": 1.5}, step=3)
    logger.flush()


def register_tiny(settings, name="bb", alias="candidate"):
    run_id = start_run(experiment="t", run_name="r", settings=settings)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    reg = register_model(run_id=run_id, name=name, model=model, card=card(run_id), alias=alias,
                         settings=settings)
    return run_id, model, reg


def test_register_pull_load_without_pickle(tmp_path, monkeypatch):
    settings = get_settings()
    uri = settings.tracking_uri
    run_id, model, reg = register_tiny(settings)
    assert (reg.name, reg.version, reg.alias) == ("bb", 1, "candidate")

    # a RunLogger pickled into another process logs into the same run
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_log_from_child, args=(run_id, settings.tracking_uri))
    child.start()
    child.join(240)  # a spawned child imports torch and MLflow: slow on a busy machine
    assert child.exitcode == 0
    c = MlflowClient(settings.tracking_uri)
    assert [(m.value, m.step) for m in c.get_metric_history(run_id, "loss")] == [(1.5, 3)]

    set_version_tags("bb", 1, {"weights_choice": "ema weights of epoch 2", "sweep_run_id": ""},
                     settings=settings)
    version = resolve("bb@candidate", settings=settings)
    assert version.tags["run_id"] == run_id and version.tags["dataset_fingerprint"] == "f" * 64
    assert version.tags["weights_choice"] == "ema weights of epoch 2"
    assert "sweep_run_id" not in version.tags  # empty values are left out
    assert resolve("bb", settings=settings).version == resolve("bb/1", settings=settings).version

    out = pull("bb@candidate", tmp_path / "w", settings=settings)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "card.json", "config.json",
                                                    "model.safetensors"]
    artifacts = [f.path for f in c.list_artifacts(run_id)]
    assert not any(p.endswith((".pkl", ".pt", ".pth")) for p in artifacts)

    x = torch.randn(2, 3, 32, 32)
    loaded = load_backbone("bb@candidate", settings=settings).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert timm.data.resolve_data_config({}, model=loaded)["mean"] == (0.4, 0.4, 0.4)
    assert loaded.hypernym_card.run_id == run_id
    assert load_backbone("bb/1", num_classes=3, settings=settings)(x).shape == (2, 3)
    assert load_backbone("bb", num_classes=0, settings=settings)(x).shape == (2, 512)
    assert load_card("bb/1", settings=settings).dataset["uri"] == "/d"

    # registering, pulling and loading pointed MLflow at the URI for a moment, not for good
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() != uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as a user of MLflow alone would
    pyfunc = mlflow.pyfunc.load_model("models:/bb@candidate")
    assert pyfunc.metadata.signature.inputs.input_names() == ["image"]
    # uint8 images in: the card's preprocessing (37 px is already 32 / crop_pct 0.875, so only
    # the 32 px center crop applies) then the model
    from torchvision.transforms.v2.functional import center_crop

    pixels = np.random.default_rng(0).integers(0, 255, (2, 37, 37, 3), dtype=np.uint8)
    rows = pyfunc.predict(pd.DataFrame({"image": list(pixels)}), params={"top_k": 3})
    x = center_crop(torch.from_numpy(pixels).permute(0, 3, 1, 2), [32, 32])
    x = (x.float() / 255 - 0.4) / 0.2
    with torch.no_grad():
        expected = model(x).softmax(1).topk(3)
    assert rows["class_ids"].tolist() == expected.indices.tolist()
    np.testing.assert_allclose(rows["probs"].tolist(), expected.values.numpy(), atol=1e-5)

    # a second registration is version 2 and moves the alias
    _, _, second = register_tiny(settings)
    assert second.version == 2 and int(resolve("bb@candidate", settings=settings).version) == 2


def test_missing_names_aliases_versions_are_explained():
    settings = get_settings()
    with pytest.raises(HypernymError, match="registry is empty"):
        resolve("bb", settings=settings)
    register_tiny(settings)
    with pytest.raises(HypernymError, match="did you mean bb"):
        resolve("bbb@candidate", settings=settings)
    with pytest.raises(HypernymError, match=r"no such alias; bb has versions \[1\] and aliases"):
        resolve("bb@prod", settings=settings)
    with pytest.raises(HypernymError, match="no such version"):
        resolve("bb/7", settings=settings)


@pytest.fixture
def mlflow_server(tmp_path):
    with start_mlflow_server(tmp_path) as server:
        yield server.url


def test_against_a_real_mlflow_server(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = get_settings()
    assert settings.tracking_uri == mlflow_server
    _, model, reg = register_tiny(settings, name="served")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_backbone("served@candidate", settings=settings).eval()(x),
                           model(x))
