"""The builders of a run's model and optimizer, from its recipe (the LR scheduler is in
`hypernym.train.schedulers`).

What differs between pretraining and fine-tuning is here: the model's start (random init or a
registered backbone, its head from the pretrained head's rows where the classes allow) and what
trains (`hypernym.train.finetune`: full, a linear probe, the last blocks, a head warm-up). The
builder returns the fine-tune plan with the model; the optimizer's groups are built from it.
timm does the work: `create_model`, `reset_classifier`, `freeze`, `create_optimizer_v2` (which
also implements layer-wise LR decay).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import timm
import timm.optim
import torch

from hypernym.errors import HypernymError
from hypernym.settings import Settings
from hypernym.train.finetune import FinetunePlan, init_head, plan_finetune

__all__ = ["BuiltModel", "build_classifier", "build_optimizer", "check_model_kwargs"]

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    """A model and its fine-tune plan (what is frozen, what the head warm-up holds)."""

    model: torch.nn.Module
    plan: FinetunePlan


def build_classifier(recipe, *, num_outputs: int, class_ids: Sequence[str] = (),
                     backbone: str | None = None,
                     settings: Settings | None = None) -> BuiltModel:
    """A timm classifier with ``num_outputs`` outputs, from random init or the registered
    ``backbone`` (a concrete ``NAME/VERSION``), with what the recipe's mode does not train
    frozen.

    Args:
        recipe: a pretrain or finetune recipe (a pretrain recipe trains everything).
        class_ids: the dataset's class ids in label order: with a fine-tune's ``head_init:
            auto``, the new head starts from the backbone's rows of the same synsets.
    """
    finetune = recipe if recipe.kind == "finetune" else None
    copied = 0
    if backbone is None:
        model = _fresh_model(recipe, num_outputs)
    else:
        from hypernym.registry.models import load_backbone

        # The registered head comes too: its rows may start the new one.
        model = load_backbone(backbone, num_classes=None, settings=settings,
                              drop_rate=recipe.model.drop_rate, **recipe.model.kwargs)
        card = model.hypernym_card
        if finetune is not None and finetune.head_init == "auto" and class_ids:
            copied = init_head(model, list(class_ids), [c["id"] for c in card.classes])
        else:
            model.reset_classifier(num_outputs)
        if copied:
            log.info("new head: %d of %d rows from %s's head (the same synsets)", copied,
                     num_outputs, backbone)
    plan = plan_finetune(
        model, mode=finetune.mode if finetune else "full",
        partial_blocks=finetune.partial_blocks if finetune else None,
        head_warmup_epochs=finetune.head_warmup_epochs if finetune else 0)
    plan.head_init_rows = copied
    return BuiltModel(model, plan)


def check_model_kwargs(recipe, *, num_outputs: int, backbone: str | None) -> None:
    """Refuse ``model.kwargs`` that timm's model does not take, in the driver: otherwise every
    worker fails on them only after Ray Train has started it (half a minute on a small machine).

    The model is built on the meta device (no memory, no init). What the meta device cannot
    build (some models call ``.item()`` while constructing) is left for the workers to report.

    Raises:
        HypernymError: a keyword argument the model's constructor does not accept.
    """
    if not recipe.model.kwargs or backbone is not None:
        return
    try:
        with torch.device("meta"):
            _fresh_model(recipe, num_outputs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise HypernymError(f"model.kwargs: timm's {recipe.model.arch!r} does not take "
                                f"them ({exc}); see the model class's constructor for the names "
                                "it takes") from None
    except Exception:  # noqa: BLE001 - the workers build it for real and report what fails
        pass


def _fresh_model(recipe, num_outputs: int) -> torch.nn.Module:
    """The recipe's timm model from random init (on the current default device)."""
    return timm.create_model(recipe.model.arch, pretrained=False, num_classes=num_outputs,
                             drop_rate=recipe.model.drop_rate, **recipe.model.kwargs)


def build_optimizer(model: torch.nn.Module, optim, plan: FinetunePlan) -> torch.optim.Optimizer:
    """timm's optimizer factory over the parameters that train (frozen ones are skipped), its
    groups bound to the plan's head warm-up.

    Layer-wise LR decay uses the model's timm group matcher; a head warm-up needs the same
    per-layer groups (`FinetunePlan.layer_decay`) so that it can hold all but the head's.
    """
    params = _scaled_groups(model, optim.weight_decay, plan.lr_scales) if plan.lr_scales \
        else model
    optimizer = timm.optim.create_optimizer_v2(
        params, opt=optim.opt, lr=optim.lr, weight_decay=optim.weight_decay,
        layer_decay=plan.layer_decay(optim.layer_decay),
    )
    plan.bind_optimizer(model, optimizer)
    return optimizer


def _scaled_groups(model: torch.nn.Module, weight_decay: float,
                   scales: dict[str, float]) -> list[dict]:
    """Parameter groups by LR scale (``lr_scale``, which timm's schedulers apply) and weight
    decay. timm's ``param_groups_weight_decay`` splits by decay only (no decay for biases and
    norms, its rule repeated here), and its layer decay needs a timm group matcher, which a
    detector has not."""
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((s for prefix, s in scales.items() if name.startswith(prefix)), 1.0)
        decay = param.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((scale, decay), []).append(param)
    return [{"params": params, "lr_scale": scale,
             "weight_decay": weight_decay if decay else 0.0}
            for (scale, decay), params in sorted(groups.items())]
