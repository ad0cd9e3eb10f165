"""Small trainers for unit tests: the real core (`hypernym.train.core.Trainer`) around a tiny
linear model, fed from shards or from a list of batches."""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3

from hypernym.config import parse_recipe
from hypernym.data.reader import Sample
from hypernym.data.schedule import EpochProgress
from hypernym.train.checkpoint import TrainState
from hypernym.train.core import Trainer
from hypernym.train.finetune import FinetunePlan
from hypernym.train.loaders import ShardLoaders
from hypernym.train.losses import CrossEntropy
from hypernym.train.tasks import ClassificationTask


def unit_recipe(path: str = "/unused", *, img_size: int = 8, data: dict | None = None,
                train: dict | None = None, optim: dict | None = None,
                scaling: dict | None = None):
    """A validated pretrain recipe of resnet10t (`tiny_trainer` brings its own model)."""
    return parse_recipe({
        "kind": "pretrain", "name": "unit",
        "data": {"path": str(path), "img_size": img_size, "batch_size": 4, **(data or {})},
        "model": {"arch": "resnet10t"},
        "optim": {"sched": "none", "lr": 0.5, **(optim or {})},
        "train": {"epochs": 1, "system_metrics_s": None, **(train or {})},
        "scaling": {"num_workers": 1, **(scaling or {})},
    })


def tiny_model(classes: int, img_size: int) -> torch.nn.Module:
    torch.manual_seed(0)  # no batch norm: a big batch and its halves give the same gradient
    return torch.nn.Sequential(torch.nn.Flatten(),
                               torch.nn.Linear(3 * img_size * img_size, classes))


class ListLoaders:
    """Loaders over a fixed list of (uint8 images, labels) batches, the same every epoch."""

    def __init__(self, batches: list, val: list | None = None) -> None:
        self.batches, self.val = [self._sample(b) for b in batches], val

    @staticmethod
    def _sample(batch) -> Sample:
        images, labels = batch
        ids = torch.arange(len(labels))
        return Sample(images, labels, ids, torch.zeros_like(ids))

    def split_sizes(self, split: str = "train") -> list[int]:
        return [max(len(b.id) for b in self.batches)]

    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def has(self, split: str) -> bool:
        return bool(self.val)

    def train(self, epoch: int, progress):
        return list(self.batches)

    def eval(self, split: str = "val"):
        return [self._sample(b) for b in self.val]


def tiny_trainer(source, *, classes: int, img_size: int = 8, model=None, ema: float | None = None,
                 data: dict | None = None, train: dict | None = None, task=None,
                 plan: FinetunePlan | None = None, optimizer=None, scheduler=None) -> Trainer:
    """The core around ``model`` (a tiny linear one by default), SGD at LR 0.5 with momentum
    (or ``optimizer``), cross-entropy.

    ``source``: a `hypernym.data.dataset.Dataset` (its shards) or a list of batches.
    """
    recipe = unit_recipe(getattr(source, "root", "/unused"), img_size=img_size, data=data,
                         train=train)
    model = model or tiny_model(classes, img_size)
    task = task or ClassificationTask(
        num_classes=classes, loss_fn=CrossEntropy(recipe.train.label_smoothing))
    loaders = (ListLoaders(source) if isinstance(source, list)
               else ShardLoaders(recipe.data, source, task.codec()))
    optimizer = optimizer or torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler,
                       progress=EpochProgress(loaders.split_sizes()),
                       ema=ModelEmaV3(model, decay=ema) if ema else None)
    return Trainer(recipe=recipe, task=task, state=state, plan=plan or FinetunePlan(),
                   loaders=loaders, device=torch.device("cpu"))
