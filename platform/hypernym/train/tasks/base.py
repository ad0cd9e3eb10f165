"""The task interface: everything in training that depends on the objective.

The training core (`hypernym.train.core.Trainer`) runs any task the same way: the reader turns
samples into images and targets with the task's codec; each step normalises the images, lets the
task mix the batch (Mixup/CutMix and their soft targets), and backpropagates the task's loss;
validation feeds the task's predictions to its meter, which reduces its figures across ranks.
What the head is, and how the model is built, is the task's too.

A task is built in the driver (so that a bad recipe fails before any Ray work) and shipped to the
workers by pickling; `setup` runs once per worker, on its device, for what should not travel
(a teacher model, say). Subclass `Task` and override what differs: the defaults are those of a
timm classifier with one output per class.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from hypernym.data.codec import LabelCodec, SampleCodec
from hypernym.settings import Settings

__all__ = ["Meter", "Task"]


class Meter(Protocol):
    """Accumulates a model's validation figures over the batches of one pass."""

    def update(self, outputs: Any, target: Any) -> None:
        """One batch: the task's ``predict`` outputs and the batch's targets (on the device)."""

    def compute(self) -> dict[str, float]:
        """The figures over every rank's batches (a collective: every rank calls it), keyed
        without the ``val/`` prefix (``loss``, ``top1``, ``map``...)."""


class Task:
    """What depends on the objective; the core calls these methods and nothing else of it.

    Attributes:
        name: the task's name in tags, model cards and logs.
        num_outputs: the model's output width (classes, labels).
    """

    name: str = "task"
    num_outputs: int = 0

    # ---- data: what a sample yields
    def codec(self) -> SampleCodec:
        """The sample codec the reader's loader workers use (small and picklable)."""
        return LabelCodec()

    def eval_codec(self) -> SampleCodec:
        """The codec of evaluation passes (validation); by default the training one (the reader
        still applies its eval transform)."""
        return self.codec()

    def batch_labels(self, target: Any) -> torch.Tensor | None:
        """Class indices of a batch's targets for the batch statistics (class mixing), or None
        when the targets have none."""
        return None

    # ---- the model
    def build_model(self, recipe, *, class_ids=(), backbone: str | None = None,
                    settings: Settings | None = None):
        """The model to train and its fine-tune plan (`hypernym.train.model.BuiltModel`):
        by default a timm classifier with `num_outputs` outputs."""
        from hypernym.train.model import build_classifier

        return build_classifier(recipe, num_outputs=self.num_outputs, class_ids=class_ids,
                                backbone=backbone, settings=settings)

    def export_model(self, recipe) -> torch.nn.Module:
        """A fresh model of the trained kind with plain weights (what registration loads the
        checkpoint's weights into): a timm classifier with `num_outputs` outputs."""
        import timm

        return timm.create_model(recipe.model.arch, pretrained=False,
                                 num_classes=self.num_outputs, **recipe.model.kwargs)

    def card_fields(self, model: torch.nn.Module, *, recipe, dataset) -> dict[str, Any]:
        """Model card fields of this task's registered model (`hypernym.registry.card`),
        given the weights to register loaded into ``model``; by default none."""
        return {}

    def setup(self, device: torch.device) -> None:
        """Once per worker, before training: move or load what the task needs on ``device``."""

    # ---- training
    def target_to(self, target: Any, device: torch.device) -> Any:
        """A batch's targets on the training device."""
        return target.to(device, non_blocking=True)

    def mix(self, images: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        """Mix a training batch (Mixup/CutMix) and its targets; by default nothing."""
        return images, target

    def loss(self, model: torch.nn.Module, images: torch.Tensor,
             target: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """The training loss of one batch: a scalar, or named parts that are summed (each part
        is logged as ``train/loss_<name>``)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    # ---- evaluation
    def predict(self, model: torch.nn.Module, images: torch.Tensor) -> Any:
        """What the meter gets for a validation batch (the model in eval mode)."""
        return model(images)

    def meter(self, device: torch.device) -> Meter:
        """A fresh accumulator of validation figures."""
        raise NotImplementedError(f"{type(self).__name__} must define meter()")

    # ---- lineage
    def lineage(self) -> dict[str, str]:
        """What the trained model derives from besides its dataset and backbone (a teacher),
        as string pairs: recorded as the run's tags (``hypernym.<key>``), in the model card's
        ``lineage`` and as the registered version's tags. None by default."""
        return {}
