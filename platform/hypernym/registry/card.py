"""The model card: what a registered model is, beside its safetensors weights (JSON, no code)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CARD_FILE", "README_FILE", "TIMM_CONFIG_FILE", "WEIGHTS_FILE", "ModelCard",
           "sha256_file", "training_card"]

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
TIMM_CONFIG_FILE = "config.json"  # timm's own layout: `timm.create_model("local-dir:DIR")`
README_FILE = "README.md"


class ModelCard(BaseModel):
    """timm architecture, classes, preprocessing and lineage of a registered model."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    num_classes: int
    classes: list[dict[str, str]] = Field(default_factory=list)  # [{id, name}] by index
    # The dataset's class tree: kind (wordnet, custom, flat) and each class's path from the root.
    hierarchy: dict[str, Any] = Field(default_factory=dict)
    loss: str = "ce"  # ce | semantic: how the classifier's logits are to be read
    weights: str = "model"  # model | ema: which weights of the run these are
    # which epoch's: {select: last|best, epoch} (+ metric and value for best)
    selected: dict[str, Any] = Field(default_factory=dict)
    input_size: list[int]  # [3, H, W]
    mean: list[float]
    std: list[float]
    # Evaluation preprocessing (the validation split's): resize the shorter side to
    # H / crop_pct with this interpolation, then a center crop of H x W.
    crop_pct: float = 0.875
    crop_mode: str = "center"
    interpolation: str = "bilinear"
    task: str  # pretrain | finetune
    # What the head was trained for (hypernym.train.tasks): classification (one softmax over
    # the classes) or multilabel (a sigmoid per class: a label is predicted from its threshold).
    objective: str = "classification"
    thresholds: list[float] = Field(default_factory=list)  # multilabel: per class, by index
    # name, fingerprint, uri; images per split, the prepare recipe, excluded subtrees
    dataset: dict[str, Any] = Field(default_factory=dict)
    recipe: dict[str, Any] = Field(default_factory=dict)  # the training recipe, as run
    run_id: str | None = None
    parent: str | None = None  # NAME/VERSION of the backbone a fine-tune started from
    # What else the weights derive from, as the task records it (a distilled model's teacher:
    # teacher, teacher_arch, teacher_sha256, distill_loss, distill_store_fingerprint...).
    lineage: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    # A detector's build config (hypernym.registry.detector_model: detector, FPN, input size,
    # normalisation, score threshold); empty for a classifier.
    detection: dict[str, Any] = Field(default_factory=dict)
    # sha256 of model.safetensors: pull, load_backbone and the served model refuse other bytes.
    # Set by register_model; empty only on cards registered before integrity checks existed.
    weights_sha256: str = ""
    hypernym_version: str = ""
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights may be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def training_card(recipe, manifest, *, arch: str, num_classes: int, weights: str,
                  selected: dict[str, Any], run_id: str, parent: str | None,
                  metrics: dict[str, Any], lineage: dict[str, str] | None = None) -> ModelCard:
    """The card of a model trained by ``recipe`` on ``manifest``'s dataset (the trainer's
    registration step): classes, hierarchy, preprocessing, data statistics and lineage."""
    from hypernym.version import __version__

    size = recipe.data.img_size
    hierarchy = manifest.hierarchy or {}
    prepare = dict(manifest.recipe)
    return ModelCard(
        arch=arch, num_classes=num_classes,
        classes=[{"id": c.id, "name": c.name} for c in manifest.classes],
        hierarchy={"kind": hierarchy.get("kind", "flat"),
                   "class_paths": hierarchy.get("class_paths", {})},
        loss=recipe.train.loss, weights=weights, selected=selected,
        input_size=[3, size, size], mean=list(recipe.data.mean), std=list(recipe.data.std),
        task=recipe.kind,
        dataset={"name": manifest.name, "fingerprint": manifest.fingerprint,
                 "uri": recipe.data.path,
                 "images": {split: manifest.num_samples(split) for split in manifest.splits},
                 "dropped": dict(manifest.dropped),
                 "excluded_subtrees": list(prepare.get("exclude_subtrees") or []),
                 "recipe": {k: v for k, v in prepare.items() if k not in ("output",)}},
        recipe=recipe.model_dump(mode="json"),
        run_id=run_id, parent=parent, lineage=dict(lineage or {}),
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        hypernym_version=__version__,
    )
