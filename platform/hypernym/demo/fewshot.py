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

The fine-tune runs in this process, through the training core (`hypernym.train.Trainer`) over the
images in memory (`hypernym.train.TensorLoaders`): fifty images train in seconds, where a Ray
Train job per seed and start would spend most of its time starting up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field

from hypernym.data.normalize import normalizer

__all__ = ["FewShotConfig", "few_shot_rows", "stage_features"]


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


def few_shot_rows(starts: dict[str, str | None], dataset: str, *, arch: str, img_size: int,
                  mean, std, cfg: FewShotConfig, settings=None,
                  log: Callable[[str], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per row ("linear probe", "fine-tune") and start (the keys of ``starts``), the val top-1
    of every seed. A start is a registered backbone's reference, or None for timm's random init
    (drawn afresh per seed); either way the model gets a new head of the dataset's width.
    ``log`` gets a line per start as its figures come in."""
    from hypernym.data.dataset import open_dataset
    from hypernym.transfer.probe import few_shot_indices, linear_probe_accuracy, load_split

    data = open_dataset(dataset)
    train_x, train_y = load_split(dataset, "train", img_size=img_size)
    val_x, val_y = load_split(dataset, "val", img_size=img_size)
    rows: dict[str, dict[str, list[float]]] = {"linear probe": {}, "fine-tune": {}}
    for start, backbone in starts.items():
        features = None  # a backbone's pre-logits are the same every seed: computed once
        for seed in range(cfg.seeds):
            idx = few_shot_indices(train_y, cfg.shots, seed)
            trainer = _trainer(data, backbone, train_x[idx], train_y[idx], (val_x, val_y),
                               arch=arch, img_size=img_size, mean=mean, std=std, cfg=cfg,
                               seed=seed, settings=settings)
            if features is None or backbone is None:
                model = trainer.state.model
                features = tuple(stage_features(model, x, mean=mean, std=std,
                                                stages=cfg.probe_stages) for x in (train_x, val_x))
            rows["linear probe"].setdefault(start, []).append(
                linear_probe_accuracy(features[0][idx], train_y[idx], features[1], val_y))
            rows["fine-tune"].setdefault(start, []).append(trainer.fit()["val/top1"])
        if log is not None:
            log(f"{start}: " + "; ".join(f"{row} " + ", ".join(f"{v:.3f}" for v in rows[row][start])
                                        for row in rows))
    return rows


def _trainer(dataset, backbone: str | None, x: torch.Tensor, y: torch.Tensor, val, *, arch: str,
             img_size: int, mean, std, cfg: FewShotConfig, seed: int, settings):
    """The training core over the few-shot subset in memory: every layer trains, AdamW with a
    cosine schedule over ``cfg.steps`` steps, random-resized crops (no flips: a mirrored digit
    is another shape); the model (its new head, or all of it from random init) drawn from
    ``seed``."""
    from hypernym.config import parse_recipe
    from hypernym.train import TensorLoaders, Trainer

    recipe = parse_recipe({
        "kind": "finetune", "name": "few-shot", "backbone": backbone, "model": {"arch": arch},
        "data": {"path": dataset.root, "img_size": img_size, "batch_size": cfg.batch_size,
                 "mean": list(mean), "std": list(std), "seed": seed},
        "optim": {"opt": "adamw", "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                  "sched": "cosine", "warmup_epochs": 0, "min_lr": 0.0},
        "train": {"epochs": 1, "system_metrics_s": None}, "registry": {"name": None},
    }, source="the few-shot fine-tune")
    loaders = TensorLoaders(x, y, val=val, batch_size=cfg.batch_size, steps=cfg.steps,
                            crop_scale=cfg.crop_scale, flip=False, seed=seed)
    return Trainer.from_recipe(recipe, dataset=dataset, loaders=loaders, backbone=backbone,
                               settings=settings)


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
