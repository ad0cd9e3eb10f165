"""Single-label classification: one class per image, softmax cross-entropy or the 21K-P
semantic softmax (`hypernym.train.losses`), timm's Mixup/CutMix, top-1/top-5 and, when the
classes form a hierarchy, the per-level semantic accuracy."""

from __future__ import annotations

import torch
from timm.data import Mixup

from hypernym.errors import HypernymError
from hypernym.train.distributed import all_reduce_sum
from hypernym.train.losses import CrossEntropy, SemanticSoftmax, build_loss, level_accuracy
from hypernym.train.tasks.base import Task

__all__ = ["ClassificationMeter", "ClassificationTask"]


class ClassificationTask(Task):
    """One label per sample (the shards' ``cls`` member).

    Args:
        num_classes: the classifier's width.
        loss_fn: `CrossEntropy` or `SemanticSoftmax`; it takes class indices or soft targets.
        mixup: timm's ``Mixup`` (it also makes the soft targets), or None.
        levels: the semantic softmax whose levels evaluation scores (None: no hierarchy).
    """

    name = "classification"

    def __init__(self, *, num_classes: int, loss_fn: CrossEntropy | SemanticSoftmax,
                 mixup: Mixup | None = None, levels: SemanticSoftmax | None = None) -> None:
        self.num_outputs = num_classes
        self.loss_fn, self.mixup, self.levels = loss_fn, mixup, levels

    @classmethod
    def from_recipe(cls, recipe, dataset) -> ClassificationTask:
        """The task of a recipe's ``train`` section on its dataset.

        Raises:
            HypernymError: ``train.loss: semantic`` on a dataset whose classes form no hierarchy,
                or a dataset with several labels per image.
        """
        train, manifest = recipe.train, dataset.manifest
        if (manifest.stats.get("annotations") or {}).get("multi_label"):
            raise HypernymError(
                f"dataset {manifest.name!r} has several labels per image (its samples have no "
                "single class): train it with the recipe's `task: multilabel` (or `detection` "
                "for its boxes), not classification")
        loss_fn = build_loss(train.loss, manifest, label_smoothing=train.label_smoothing)
        mixup = None
        if train.mixup_alpha > 0 or train.cutmix_alpha > 0:
            mixup = Mixup(
                mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha,
                prob=train.mix_prob, switch_prob=train.mix_switch_prob, mode="batch",
                # The semantic softmax smooths per level itself; timm smooths over all classes.
                label_smoothing=0.0 if train.loss == "semantic" else train.label_smoothing,
                num_classes=len(manifest.classes))
        return cls(num_classes=len(manifest.classes), loss_fn=loss_fn, mixup=mixup,
                   levels=level_accuracy(manifest, loss_fn, torch.device("cpu")))

    def batch_labels(self, target: torch.Tensor) -> torch.Tensor:
        return target

    def setup(self, device: torch.device) -> None:
        self.loss_fn = self.loss_fn.to(device)
        if self.levels is not None:
            self.levels = self.levels.to(device)

    def mix(self, images: torch.Tensor, target: torch.Tensor):
        if self.mixup is None:
            return images, target
        return self.mixup(images, target)

    def loss(self, model, images, target) -> torch.Tensor:
        return self.loss_fn(model(images), target)

    def meter(self, device: torch.device) -> ClassificationMeter:
        return ClassificationMeter(self.loss_fn, self.levels, device)


class ClassificationMeter:
    """Loss, top-1, top-5 and (with a hierarchy) semantic accuracy, summed on the device and
    reduced across ranks by one all-reduce."""

    def __init__(self, loss_fn, levels: SemanticSoftmax | None, device: torch.device) -> None:
        self.loss_fn, self.levels = loss_fn, levels
        count = len(levels.members) if levels is not None else 0
        # loss sum, top-1, top-5, count, then (right, with a target) per level
        self.totals = torch.zeros(4 + 2 * count, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        row = [self.loss_fn(logits, labels) * len(labels), (top[:, 0] == labels).sum(),
               (top == labels[:, None]).any(dim=1).sum(), torch.tensor(len(labels))]
        if self.levels is not None:
            row += list(self.levels.correct(logits, labels).flatten())
        self.totals += torch.stack([v.to(self.totals.device, torch.float64) for v in row])

    def compute(self) -> dict[str, float]:
        totals = all_reduce_sum(self.totals.clone()).cpu()
        count = max(totals[3].item(), 1.0)
        out = {"loss": totals[0].item() / count, "top1": totals[1].item() / count,
               "top5": totals[2].item() / count}
        if self.levels is not None:
            per_level = totals[4:].view(-1, 2)
            # The 21K-P "semantic accuracy": right predictions over all level targets.
            out["semantic_top1"] = (per_level[:, 0].sum()
                                    / per_level[:, 1].sum().clamp(min=1)).item()
            for level, (right, valid) in zip(self.levels.levels, per_level.tolist(),
                                             strict=True):
                out[f"semantic_top1_level{level}"] = right / max(valid, 1)
        return out
