"""The builders of a run's model, optimizer and LR scheduler, from its `TaskSpec` and recipe.

What differs between pretraining and fine-tuning is here: the model's start (random init or a
registered backbone) and the trainable parameters (all, or a linear probe's classifier). The loop
(loop.py) is shared; the loss is chosen by `hypernym.train.losses.build_loss`. timm does the
work: `create_model`, `create_optimizer_v2` (which also implements layer-wise LR decay),
`create_scheduler_v2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import timm.optim
import timm.scheduler
import torch

from hypernym.settings import Settings

__all__ = ["TaskSpec", "build_model", "build_optimizer", "build_scheduler"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs to build its model, picklable for Ray.

    Attributes:
        arch: timm model name.
        num_classes: classifier width (the dataset's classes).
        backbone_ref: a concrete registry reference (``NAME/VERSION``) to start from, or None.
        mode: ``full`` trains every parameter, ``linear`` only the classifier.
        drop_rate: classifier dropout.
        model_kwargs: extra ``timm.create_model`` arguments.
        settings: the driver's resolved settings (workers have another cwd and environment).
    """

    arch: str
    num_classes: int
    backbone_ref: str | None = None
    mode: str = "full"
    drop_rate: float = 0.0
    model_kwargs: dict | None = None
    settings: Settings | None = None


def build_model(task: TaskSpec) -> torch.nn.Module:
    """A timm model with ``num_classes`` outputs, from random init or a registered backbone."""
    kwargs = dict(task.model_kwargs or {})
    if task.backbone_ref is None:
        model = timm.create_model(
            task.arch, pretrained=False, num_classes=task.num_classes, drop_rate=task.drop_rate,
            **kwargs,
        )
    else:
        from hypernym.registry.models import load_backbone

        model = load_backbone(
            task.backbone_ref, num_classes=task.num_classes, settings=task.settings,
            drop_rate=task.drop_rate, **kwargs,
        )
    if task.mode == "linear":
        # A linear probe: the backbone is frozen, only timm's classifier learns.
        for param in model.parameters():
            param.requires_grad_(False)
        for param in model.get_classifier().parameters():
            param.requires_grad_(True)
    return model


def build_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    """timm's optimizer factory; layer_decay needs the model's timm group matcher."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if len(trainable) < sum(1 for _ in model.parameters()):
        # Frozen backbone: hand timm only what trains (layer decay is moot for a probe).
        return timm.optim.create_optimizer_v2(
            trainable, opt=optim.opt, lr=optim.lr, weight_decay=optim.weight_decay
        )
    return timm.optim.create_optimizer_v2(
        model, opt=optim.opt, lr=optim.lr, weight_decay=optim.weight_decay,
        layer_decay=optim.layer_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, optim, *, epochs: int, steps: int):
    """A per-step timm scheduler (or None), stepped with ``step_update(global_step)``."""
    if optim.sched == "none":
        return None
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched=optim.sched,
        num_epochs=epochs,
        warmup_epochs=optim.warmup_epochs,
        warmup_lr=optim.min_lr if optim.warmup_lr is None else optim.warmup_lr,
        min_lr=optim.min_lr,
        step_on_epochs=False,
        updates_per_epoch=max(steps, 1),
    )
    return scheduler
