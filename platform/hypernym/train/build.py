"""The builders of a run's model, optimizer and LR scheduler, from its `TaskSpec` and recipe.

What differs between pretraining and fine-tuning is here: the model's start (random init or a
registered backbone, its head from the pretrained head's rows where the classes allow) and what
trains (hypernym.train.finetune: full, a linear probe, the last blocks, a head warm-up). The
loop (loop.py) is shared; the loss is chosen by `hypernym.train.losses.build_loss`. timm does
the work: `create_model`, `reset_classifier`, `freeze`, `create_optimizer_v2` (which also
implements layer-wise LR decay), `create_scheduler_v2` (hypernym.train.schedulers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import timm
import timm.optim
import torch

from hypernym.settings import Settings
from hypernym.train.finetune import init_head, plan_finetune
from hypernym.train.schedulers import build_scheduler

__all__ = ["TaskSpec", "build_model", "build_optimizer", "build_scheduler", "check_model_kwargs",
           "task_spec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs to build its model, picklable for Ray.

    Attributes:
        arch: timm model name.
        num_classes: classifier width (the dataset's classes).
        backbone_ref: a concrete registry reference (``NAME/VERSION``) to start from, or None.
        mode: ``full`` trains every parameter, ``linear`` only the classifier (a probe),
            ``partial`` the last ``partial_blocks`` blocks and the head.
        drop_rate: classifier dropout.
        model_kwargs: extra ``timm.create_model`` arguments.
        settings: the driver's resolved settings (workers have another cwd and environment).
        partial_blocks: blocks of timm's group matcher that train in mode ``partial``.
        head_warmup_epochs: epochs of head-only training before the mode's parameters train.
        head_init: ``auto`` starts the new head from the backbone's rows for the same synsets.
        class_ids: the dataset's class ids, in label order (for ``head_init``).
    """

    arch: str
    num_classes: int
    backbone_ref: str | None = None
    mode: str = "full"
    drop_rate: float = 0.0
    model_kwargs: dict | None = None
    settings: Settings | None = None
    partial_blocks: int | None = None
    head_warmup_epochs: int = 0
    head_init: str = "auto"
    class_ids: tuple[str, ...] = ()


def task_spec(recipe, manifest, *, backbone: str | None, settings: Settings) -> TaskSpec:
    """The TaskSpec of a pretrain or finetune recipe on its dataset."""
    return TaskSpec(
        arch=recipe.model.arch, num_classes=len(manifest.classes), backbone_ref=backbone,
        mode=getattr(recipe, "mode", "full"), drop_rate=recipe.model.drop_rate,
        model_kwargs=recipe.model.kwargs, settings=settings,
        partial_blocks=getattr(recipe, "partial_blocks", None),
        head_warmup_epochs=getattr(recipe, "head_warmup_epochs", 0),
        head_init=getattr(recipe, "head_init", "random"),
        class_ids=tuple(c.id for c in manifest.classes),
    )


def check_model_kwargs(task: TaskSpec) -> None:
    """Refuse ``model.kwargs`` that timm's model does not take, in the driver: otherwise every
    worker fails on them only after Ray Train has started it (half a minute on a small machine).

    The model is built on the meta device (no memory, no init). What the meta device cannot
    build (some models call ``.item()`` while constructing) is left for the workers to report.

    Raises:
        HypernymError: a keyword argument the model's constructor does not accept.
    """
    from hypernym.errors import HypernymError

    if not task.model_kwargs or task.backbone_ref is not None:
        return
    try:
        with torch.device("meta"):
            _fresh_model(task)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise HypernymError(f"model.kwargs: timm's {task.arch!r} does not take them ({exc});"
                                " see the model class's constructor for the names it takes"
                                ) from None
    except Exception:  # noqa: BLE001 - the workers build it for real and report what fails
        pass


def _fresh_model(task: TaskSpec) -> torch.nn.Module:
    """The task's timm model from random init (on the current default device)."""
    return timm.create_model(task.arch, pretrained=False, num_classes=task.num_classes,
                             drop_rate=task.drop_rate, **(task.model_kwargs or {}))


def build_model(task: TaskSpec) -> torch.nn.Module:
    """A timm model with ``num_classes`` outputs, from random init or a registered backbone,
    with what its mode does not train frozen (``model.hypernym_finetune`` says what)."""
    kwargs = dict(task.model_kwargs or {})
    copied = 0
    if task.backbone_ref is None:
        model = _fresh_model(task)
    else:
        from hypernym.registry.models import load_backbone

        # The registered head comes too: its rows may start the new one.
        model = load_backbone(task.backbone_ref, num_classes=None, settings=task.settings,
                              drop_rate=task.drop_rate, **kwargs)
        card = model.hypernym_card
        if task.head_init == "auto" and task.class_ids:
            copied = init_head(model, list(task.class_ids), [c["id"] for c in card.classes])
        else:
            model.reset_classifier(task.num_classes)
        if copied:
            log.info("new head: %d of %d rows from %s's head (the same synsets)", copied,
                     task.num_classes, task.backbone_ref)
    plan = plan_finetune(model, mode=task.mode, partial_blocks=task.partial_blocks,
                         head_warmup_epochs=task.head_warmup_epochs)
    plan.head_init_rows = copied
    return model


def build_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    """timm's optimizer factory over the parameters that train (frozen ones are skipped).

    Layer-wise LR decay uses the model's timm group matcher; a head warm-up needs the same
    per-layer groups (at decay 1 when none is set) so that it can hold all but the head's.
    """
    plan = getattr(model, "hypernym_finetune", None)
    layer_decay = optim.layer_decay
    if plan is not None and plan.warmup_epochs and layer_decay is None:
        layer_decay = 1.0
    optimizer = timm.optim.create_optimizer_v2(
        model, opt=optim.opt, lr=optim.lr, weight_decay=optim.weight_decay,
        layer_decay=layer_decay,
    )
    if plan is not None:
        plan.mark_groups(model, optimizer)
    return optimizer
