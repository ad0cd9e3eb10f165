"""Registering tiny timm models without a training run, and real images for serving tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import timm
from PIL import Image

from hypernym.registry.card import ModelCard
from hypernym.registry.models import register_model
from hypernym.settings import Settings
from hypernym.tracking import RunLogger, log_inputs, start_run

CLASSES = [{"id": f"n0000000{i}", "name": f"thing {i}"} for i in range(5)]


def settings_at(root: Path) -> Settings:
    """Embedded MLflow under ``root`` (module-scoped fixtures share one registry)."""
    root.mkdir(parents=True, exist_ok=True)
    return Settings(home=root, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                    artifact_root=(root / "mlartifacts").as_uri(), ray_address=None)


def make_card(run_id: str, **kw) -> ModelCard:
    fields = {"arch": "resnet10t", "num_classes": 5, "input_size": [3, 32, 32],
              "mean": [0.4] * 3, "std": [0.2] * 3, "task": "pretrain", "run_id": run_id,
              "classes": CLASSES,
              "dataset": {"name": "mini-in21k", "fingerprint": "f" * 64, "uri": "/data/mini",
                          "images": {"train": 300, "val": 50},
                          "excluded_subtrees": ["n00007846"],
                          "recipe": {"source_format": "winter21", "min_per_class": 10}},
              "hierarchy": {"kind": "wordnet", "class_paths": {c["id"]: ["n00001740", c["id"]]
                                                               for c in CLASSES}},
              "recipe": {"model": {"arch": "resnet10t"}, "train": {"epochs": 2}}}
    fields.update(kw)
    return ModelCard(**fields)


def make_run(settings: Settings, name: str, *, metrics: dict[str, float] | None = None,
             kind: str = "pretrain", **card_kw) -> tuple[str, ModelCard]:
    """A finished run (recipe params, metrics, dataset input) and the card of its model."""
    run_id = start_run(experiment="t", run_name=f"{kind}-{name}", settings=settings,
                       tags={"hypernym.kind": kind})
    logger = RunLogger(run_id, tracking_uri=settings.tracking_uri)
    logger.log_params({"model": {"arch": "resnet10t"}, "train": {"epochs": 2},
                       "kind": kind, "name": f"{kind}-{name}"})
    logger.log_metrics(metrics or {"val/top1": 0.5}, step=1)
    card = make_card(run_id, task=kind, metrics=metrics or {"val/top1": 0.5}, **card_kw)
    log_inputs(run_id, dataset_name=card.dataset["name"], fingerprint=card.dataset["fingerprint"],
               uri=card.dataset["uri"], settings=settings)
    logger.finish("FINISHED")
    return run_id, card


def register_run(settings: Settings, run_id: str, card: ModelCard, name: str,
                 alias: str | None = "candidate", *, seed: int = 0):
    """Register a resnet10t (seeded weights) as a version of ``name`` from ``run_id``."""
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    return model, register_model(run_id=run_id, name=name, model=model, card=card, alias=alias,
                                 settings=settings)


def register_tiny(settings: Settings, name: str = "bb", alias: str | None = "candidate", *,
                  seed: int = 0, metrics: dict[str, float] | None = None,
                  kind: str = "pretrain", **card_kw):
    """A run and a registered resnet10t of it: (run_id, model, RegisteredModel)."""
    run_id, card = make_run(settings, name, metrics=metrics, kind=kind, **card_kw)
    model, reg = register_run(settings, run_id, card, name, alias, seed=seed)
    return run_id, model, reg


def jpeg_bytes(width: int = 80, height: int = 60, fmt: str = "JPEG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()
