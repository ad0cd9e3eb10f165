"""The model card: what a registered model is, beside its safetensors weights (JSON, no code)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CARD_FILE", "WEIGHTS_FILE", "ModelCard"]

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"


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
    task: str  # pretrain | finetune
    dataset: dict[str, Any] = Field(default_factory=dict)  # name, fingerprint, uri
    run_id: str | None = None
    parent: str | None = None  # NAME/VERSION of the backbone a fine-tune started from
    metrics: dict[str, float] = Field(default_factory=dict)
    hypernym_version: str = ""
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
