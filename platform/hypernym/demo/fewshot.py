"""The demo's few-shot rows: ``shots`` labelled digits per class, a linear probe on frozen
features and a full fine-tune, each from the pretrained backbone and from random init with the
same budget, over several seeds of the few-shot subset.

The probe is the transfer package's (`hypernym.transfer.probe`: logistic regression on
standardised pooled features, batch norm in eval mode). The fine-tune runs in this process: a
hundred images train in seconds, where a Ray Train job per seed and start would spend most of its
time starting up.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2

__all__ = ["FewShotConfig", "few_shot_rows", "fine_tune_accuracy"]


class FewShotConfig(BaseModel):
    """Budget of the few-shot rows (the same for both starts)."""

    model_config = ConfigDict(extra="forbid")

    shots: int = Field(10, ge=1, description="labelled images per class")
    seeds: int = Field(3, ge=1, description="few-shot subsets drawn (seeds 0..seeds-1)")
    steps: int = Field(60, ge=1, description="fine-tuning steps per run")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    crop_scale: tuple[float, float] = (0.6, 1.0)


def few_shot_rows(models: dict[str, torch.nn.Module], dataset: str, *, img_size: int,
                  mean, std, cfg: FewShotConfig,
                  log: Callable[[str], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per row ("linear probe", "fine-tune") and start (the keys of ``models``), the val top-1
    of every seed. ``models`` are timm models with a classifier of the dataset's width; ``log``
    gets a line per start as its figures come in."""
    from hypernym.transfer.probe import (
        extract_features,
        few_shot_indices,
        linear_probe_accuracy,
        load_split,
    )

    train_x, train_y = load_split(dataset, "train", img_size=img_size)
    val_x, val_y = load_split(dataset, "val", img_size=img_size)
    rows: dict[str, dict[str, list[float]]] = {"linear probe": {}, "fine-tune": {}}
    for start, model in models.items():
        features = copy.deepcopy(model)
        features.reset_classifier(0)
        fx = extract_features(features, train_x, mean=mean, std=std)
        vx = extract_features(features, val_x, mean=mean, std=std)
        for seed in range(cfg.seeds):
            idx = few_shot_indices(train_y, cfg.shots, seed)
            rows["linear probe"].setdefault(start, []).append(
                linear_probe_accuracy(fx[idx], train_y[idx], vx, val_y))
            rows["fine-tune"].setdefault(start, []).append(fine_tune_accuracy(
                model, train_x[idx], train_y[idx], val_x, val_y, mean=mean, std=std, cfg=cfg,
                seed=seed))
        if log is not None:
            log(f"{start}: " + "; ".join(f"{row} " + ", ".join(f"{v:.3f}" for v in rows[row][start])
                                        for row in rows))
    return rows


def fine_tune_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                       val_x: torch.Tensor, val_y: torch.Tensor, *, mean, std,
                       cfg: FewShotConfig, seed: int) -> float:
    """Val top-1 after fine-tuning a copy of ``model`` (every layer) on uint8 images ``x``:
    AdamW with a cosine schedule, random-resized crops (no flips: a mirrored digit is another
    shape), ``cfg.steps`` steps."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model).train()
    size = x.shape[-1]
    crop = v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        batch = torch.stack([crop(x[i]) for i in idx.tolist()])
        loss = F.cross_entropy(model((batch.float() - m) / s), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        right = sum(int((model((val_x[i:i + 256].float() - m) / s).argmax(1)
                         == val_y[i:i + 256]).sum()) for i in range(0, len(val_x), 256))
    return right / len(val_x)
