"""Multi-label classification: every label of an annotated image, one sigmoid per class.

Targets are multi-hot rows from the shards' ``json`` members (`hypernym.data.multilabel`, whose
training crops drop the labels of objects they cut away). The loss is binary cross-entropy or
the asymmetric loss of Ridnik et al. (ICCV 2021, timm's ``AsymmetricLossMultiLabel``), both
summed over classes and averaged over images. Mixup and CutMix are timm's with
``multi_label=True``: the multi-hot rows are mixed with the images' own lambda and pairing
(CutMix's lambda is the pasted area's share). Validation gathers every rank's scores and
targets, since mAP and best thresholds are not sums (`MultiLabelMeter`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import AsymmetricLossMultiLabel

from hypernym.data.multilabel import MultiLabelCodec
from hypernym.errors import HypernymError
from hypernym.train.distributed import all_gather, all_reduce_sum
from hypernym.train.tasks.base import Task
from hypernym.train.tasks.multilabel_metrics import best_thresholds, summary

__all__ = ["BinaryCrossEntropy", "MultiLabelMeter", "MultiLabelTask", "build_multilabel_loss"]


class BinaryCrossEntropy:
    """BCE with logits, summed over classes and averaged over images (ASL's ``batchmean``), with
    each target smoothed towards 0.5 by ``smoothing`` (timm's multi-label smoothing)."""

    def __init__(self, smoothing: float = 0.0) -> None:
        self.smoothing = smoothing

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), target,
                                                  reduction="sum") / max(len(target), 1)


def build_multilabel_loss(recipe):
    """The recipe's multi-label loss: ``bce`` or ``asl`` (``multilabel.asl_*``)."""
    train, spec = recipe.train, recipe.multilabel
    if train.loss == "asl":
        return AsymmetricLossMultiLabel(gamma_neg=spec.asl_gamma_neg,
                                        gamma_pos=spec.asl_gamma_pos, clip=spec.asl_clip,
                                        smoothing=train.label_smoothing, reduction="batchmean")
    return BinaryCrossEntropy(train.label_smoothing)


class MultiLabelTask(Task):
    """Several labels per sample.

    Args:
        num_classes: the classifier's width.
        loss_fn: a callable (logits, multi-hot or mixed targets) -> scalar.
        mixup: timm's ``Mixup`` with ``multi_label=True``, or None.
        threshold: the probability from which a label counts as predicted (validation F1).
        codec_args: `MultiLabelCodec`'s keyword arguments (img_size, crop_scale,
            rand_augment, min_visible).
    """

    name = "multilabel"

    def __init__(self, *, num_classes: int, loss_fn, mixup: Mixup | None = None,
                 threshold: float = 0.5, codec_args: dict | None = None) -> None:
        self.num_outputs = num_classes
        self.loss_fn, self.mixup, self.threshold = loss_fn, mixup, threshold
        self.codec_args = dict(codec_args or {})

    @classmethod
    def from_recipe(cls, recipe, dataset) -> MultiLabelTask:
        """The task of a recipe on its dataset.

        Raises:
            HypernymError: the dataset was prepared without annotations (its samples carry
                one class and no labels).
        """
        manifest, train = dataset.manifest, recipe.train
        if not (manifest.stats or {}).get("annotations"):
            raise HypernymError(
                f"dataset {manifest.name!r} has one class per image and no annotations: task "
                "multilabel reads each image's labels, written by `hypernym prepare` from an "
                "annotated source (VOC, COCO, a table with several labels per image: "
                "docs/annotations.md). Prepare it from one, or use task: classification")
        mixup = None
        if train.mixup_alpha > 0 or train.cutmix_alpha > 0:
            mixup = Mixup(mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha,
                          prob=train.mix_prob, switch_prob=train.mix_switch_prob, mode="batch",
                          label_smoothing=0.0,  # the loss smooths (mixed or not)
                          num_classes=len(manifest.classes), multi_label=True)
        data = recipe.data
        return cls(num_classes=len(manifest.classes), loss_fn=build_multilabel_loss(recipe),
                   mixup=mixup, threshold=recipe.multilabel.threshold,
                   codec_args={"img_size": data.img_size, "crop_scale": data.crop_scale,
                               "rand_augment": data.rand_augment,
                               "min_visible": recipe.multilabel.min_visible})

    def codec(self) -> MultiLabelCodec:
        return MultiLabelCodec(self.num_outputs, train=True, **self.codec_args)

    def eval_codec(self) -> MultiLabelCodec:
        return MultiLabelCodec(self.num_outputs, train=False, **self.codec_args)

    def mix(self, images: torch.Tensor, target: torch.Tensor):
        if self.mixup is None:
            return images, target
        return self.mixup(images, target)

    def loss(self, model, images, target) -> torch.Tensor:
        return self.loss_fn(model(images), target)

    def meter(self, device: torch.device) -> MultiLabelMeter:
        return MultiLabelMeter(self.loss_fn, self.threshold, device)

    def card_fields(self, model: torch.nn.Module, *, recipe, dataset) -> dict:
        """What the model card records of a multi-label model: the task, the evaluation
        preprocessing (the whole image resized), and per class the threshold that maximises
        its F1 on the validation split (``multilabel.threshold`` for classes without a
        positive there, or for every class without a validation split)."""
        from hypernym.train.tasks.multilabel_eval import score_split

        fields = {"objective": self.name, "crop_pct": 1.0, "crop_mode": "squash",
                  "thresholds": [self.threshold] * self.num_outputs}
        if dataset.num_samples("val"):
            data = recipe.data
            targets, scores = score_split(model, dataset.manifest, dataset.root, "val",
                                          img_size=data.img_size, mean=data.mean, std=data.std,
                                          batch_size=data.batch_size)
            tuned, _ = best_thresholds(targets, scores, self.threshold)
            fields["thresholds"] = [round(float(t), 6) for t in tuned]
        return fields


class MultiLabelMeter:
    """Loss, mAP, F1 at the threshold, and each class's best threshold, over every rank.

    The loss is summed on the device and all-reduced; scores and targets are kept (on the
    device) and gathered from every rank at `compute`, which every rank then computes alike.
    After `compute`, ``per_class`` holds the per-class arrays (``ap``, ``f1`` at the
    threshold, the best ``threshold``, ``f1_best``).
    """

    def __init__(self, loss_fn, threshold: float, device: torch.device) -> None:
        self.loss_fn, self.threshold = loss_fn, threshold
        self.totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, images
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.per_class: dict[str, np.ndarray] = {}

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        loss = self.loss_fn(logits, target) * len(target)
        self.totals += torch.stack([loss.to(self.totals), torch.tensor(
            float(len(target)), dtype=torch.float64, device=self.totals.device)])
        self.scores.append(torch.sigmoid(logits))
        self.targets.append(target > 0.5)

    def compute(self) -> dict[str, float]:
        loss, count = all_reduce_sum(self.totals.clone()).cpu().tolist()
        mine = (torch.cat(self.scores).cpu() if self.scores else torch.empty(0, 0),
                torch.cat(self.targets).cpu() if self.targets else torch.empty(0, 0, dtype=bool))
        parts = [p for p in all_gather(mine) if p[0].numel()]
        if not parts:
            return {"loss": 0.0}
        scores = torch.cat([s for s, _ in parts]).numpy()
        targets = torch.cat([t for _, t in parts]).numpy()
        figures = summary(targets, scores, self.threshold)
        self.per_class = figures.pop("per_class")
        return {"loss": loss / max(count, 1.0), **figures}
