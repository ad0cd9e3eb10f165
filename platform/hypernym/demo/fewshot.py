"""The demo's few-shot rows: ``shots`` labelled digits per class, a linear probe on frozen
features and a full fine-tune, each from the pretrained backbone and from random init with the
same budget, over several seeds of the few-shot subset.

Random init is drawn afresh for every seed (timm's init under ``torch.manual_seed(seed)``), so its
spread holds the luck of the init as well as of the subset: a single draw of random init can sit
several points above or below its average (docs/benchmarks.md, "Demo").

The probe is the transfer package's logistic regression (`hypernym.transfer.probe`, on
standardised features, batch norm in eval mode), by default on the pooled pre-logits, as a linear
evaluation is usually done; ``probe_stages`` > 1 concatenates the pooled outputs of the last
stages instead (DINO's linear evaluation does so with its last blocks).

The fine-tune runs in this process: fifty images train in seconds, where a Ray Train job per
seed and start would spend most of its time starting up.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2

from hypernym.data.normalize import normalizer

__all__ = ["FewShotConfig", "few_shot_rows", "fine_tune_accuracy", "stage_features"]


class FewShotConfig(BaseModel):
    """Budget of the few-shot rows (the same for both starts)."""

    model_config = ConfigDict(extra="forbid")

    shots: int = Field(5, ge=1, description="labelled images per class")
    probe_stages: int = Field(1, ge=1, description="the probe's features: the pooled outputs "
                              "of the backbone's last N stages, concatenated (1: the pooled "
                              "pre-logits alone)")
    seeds: int = Field(3, ge=1, description="few-shot subsets drawn (seeds 0..seeds-1)")
    steps: int = Field(60, ge=1, description="fine-tuning steps per run")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    crop_scale: tuple[float, float] = (0.6, 1.0)


def few_shot_rows(starts: dict[str, Callable[[int], torch.nn.Module]], dataset: str, *,
                  img_size: int, mean, std, cfg: FewShotConfig,
                  log: Callable[[str], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per row ("linear probe", "fine-tune") and start (the keys of ``starts``), the val top-1
    of every seed. A start maps a seed to a timm model with a classifier of the dataset's width
    (the same model for every seed, or a fresh one); ``log`` gets a line per start as its
    figures come in."""
    from hypernym.transfer.probe import few_shot_indices, linear_probe_accuracy, load_split

    train_x, train_y = load_split(dataset, "train", img_size=img_size)
    val_x, val_y = load_split(dataset, "val", img_size=img_size)
    rows: dict[str, dict[str, list[float]]] = {"linear probe": {}, "fine-tune": {}}
    for start, make in starts.items():
        featured = None  # the model the features below came from: a start that keeps its model
        for seed in range(cfg.seeds):
            model = make(seed)
            if model is not featured:
                fx, vx = (stage_features(model, x, mean=mean, std=std, stages=cfg.probe_stages)
                          for x in (train_x, val_x))
                featured = model
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


@torch.no_grad()
def stage_features(model: torch.nn.Module, images: torch.Tensor, *, mean, std, stages: int,
                   batch_size: int = 256) -> torch.Tensor:
    """[N, D] features of uint8 images [N, 3, H, W]: the global-average-pooled outputs of the
    model's last ``stages`` stages (timm's ``forward_intermediates``), concatenated; with
    ``stages`` 1 the pooled pre-logits (`hypernym.transfer.probe.extract_features`). The model is
    put in eval mode."""
    from hypernym.transfer.probe import extract_features

    if stages == 1:  # pre-logits: the classifier is never applied
        return extract_features(model, images, mean=mean, std=std, batch_size=batch_size)
    model.eval()
    normalize = normalizer(torch.device("cpu"), mean, std)
    out = []
    for i in range(0, len(images), batch_size):
        maps = model.forward_intermediates(normalize(images[i:i + batch_size]),
                                           indices=stages, intermediates_only=True)
        out.append(torch.cat([f.float().mean(dim=(2, 3)) for f in maps], dim=1))
    return torch.cat(out)


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
    normalize = normalizer(torch.device("cpu"), mean, std)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        batch = torch.stack([crop(x[i]) for i in idx.tolist()])
        loss = F.cross_entropy(model(normalize(batch)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        right = sum(int((model(normalize(val_x[i:i + 256])).argmax(1)
                         == val_y[i:i + 256]).sum()) for i in range(0, len(val_x), 256))
    return right / len(val_x)
