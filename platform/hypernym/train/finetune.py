"""Fine-tuning modes: what trains, what stays fixed, and where the new head starts.

- ``linear``: a true probe. timm's ``freeze`` fixes the backbone's parameters and turns its
  BatchNorm layers into ``FrozenBatchNorm2d`` (statistics fixed); ``train_mode`` keeps the frozen
  modules in eval mode (no dropout or drop-path) whenever the loop puts the model in train mode.
- ``partial``: the last N blocks of the model's timm group matcher (the grouping that layer-wise
  LR decay uses) plus the head; everything before is frozen the same way.
- ``full``: every parameter (``optim.layer_decay`` for layer-wise LR decay).
- head warm-up (``head_warmup_epochs: K``): for K epochs only the head learns, then everything
  the mode trains. The optimizer holds every parameter from the start and the held layers' LR
  scale is 0 during the warm-up (timm's schedulers multiply each group's LR by its
  ``lr_scale``): DDP and FSDP fix the set of trainable parameters when they wrap the model, so
  toggling ``requires_grad`` mid-run would break their gradient sync, and one optimizer keeps the
  checkpoint the same shape in both phases. The held layers stay in eval mode (fixed statistics)
  during the warm-up, and their optimizer state is cleared when they are released, so they start
  like a fresh optimizer would. The cost: their gradients are still computed during warm-up.
- head init: when the new classes are synsets the pretrained head also has, the new head starts
  from the pretrained rows of those synsets (what timm does for its in22k -> in1k weights).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
from timm.models import group_parameters
from timm.utils.model import freeze

from hypernym.errors import HypernymError
from hypernym.train.distributed import unwrap

__all__ = ["FinetunePlan", "freeze_all_but", "init_head", "plan_finetune", "train_mode"]

log = logging.getLogger(__name__)
_SYNSET = re.compile(r"^n\d{8}$")


@dataclass
class FinetunePlan:
    """Which modules of a model are frozen for the run, and which are held during warm-up.

    Attributes:
        frozen: names of the maximal submodules frozen for the whole run (eval mode always).
        held: names of the maximal submodules held during the head warm-up.
        held_params: parameter names held during the head warm-up.
        warmup_epochs: epochs of head-only training.
        holding: whether the current epoch is a warm-up epoch.
        head_init_rows: rows of the new head copied from the pretrained head.
        held_groups: the optimizer's parameter groups the warm-up holds (index -> the group's
            own ``lr_scale``), once `bind_optimizer` has seen the optimizer.
        lr_scales: parameter-name prefixes whose LR is the recipe's times a factor (a
            detector's backbone, ``detection.backbone_lr_scale``); the rest train at the LR.
    """

    frozen: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    held_params: frozenset[str] = field(default_factory=frozenset)
    warmup_epochs: int = 0
    holding: bool = False
    head_init_rows: int = 0
    held_groups: dict[int, float] = field(default_factory=dict)
    lr_scales: dict[str, float] = field(default_factory=dict)

    def layer_decay(self, configured: float | None) -> float | None:
        """The layer decay the optimizer is built with: a head warm-up needs per-layer groups
        (decay 1 when the recipe sets none) so that it can hold all but the head's."""
        return 1.0 if self.warmup_epochs and configured is None else configured

    def bind_optimizer(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Find the parameter groups the warm-up holds (all or none of a group's parameters
        must be held: groups are per layer of the group matcher)."""
        if not self.warmup_epochs:
            return
        names = {id(p): n for n, p in model.named_parameters()}
        for index, group in enumerate(optimizer.param_groups):
            held = [names[id(p)] in self.held_params for p in group["params"]]
            if any(held) and not all(held):
                raise AssertionError("a parameter group mixes held and head parameters")
            if all(held):
                self.held_groups[index] = group.setdefault("lr_scale", 1.0)

    def enter_epoch(self, epoch: int, optimizer, scheduler, *, global_step: int,
                    base_lr: float) -> None:
        """Hold or release the warm-up's layers for ``epoch`` (also right after a restore)."""
        self.holding = epoch < self.warmup_epochs
        changed = False
        for index, own_scale in self.held_groups.items():
            group = optimizer.param_groups[index]
            scale = 0.0 if self.holding else own_scale
            if group["lr_scale"] != scale:
                group["lr_scale"], changed = scale, True
                if not self.holding:  # released: no moments from the held phase
                    for param in group["params"]:
                        optimizer.state.pop(param, None)
        if changed:
            sync_lr(optimizer, scheduler, global_step=global_step, base_lr=base_lr)
            log.info("epoch %d: %s", epoch, "training the head only (warm-up)" if self.holding
                     else "head warm-up over: every layer of the mode trains")


def sync_lr(optimizer, scheduler, *, global_step: int, base_lr: float,
            initial: bool = False) -> None:
    """Set every group's LR from the schedule and its ``lr_scale`` now.

    timm's schedulers apply ``lr_scale`` (layer decay, the warm-up hold) only when they step, so
    without the ``initial`` sync the first optimizer step would run every layer at the base LR;
    ``plateau`` (stepped per epoch, without warm-up) and no scheduler never apply it at all.
    """
    from timm.scheduler import PlateauLRScheduler

    if scheduler is not None and not isinstance(scheduler, PlateauLRScheduler):
        scheduler.step_update(num_updates=global_step)
        return
    ref = base_lr
    if scheduler is not None:
        if initial and scheduler.warmup_t:
            return  # timm set the scaled warm-up LR itself
        live = [g for g in optimizer.param_groups if g.get("lr_scale", 1.0) > 0]
        if not initial and live:  # the LR plateau has decayed to, from a group not held
            ref = live[0]["lr"] / live[0].get("lr_scale", 1.0)
    for group in optimizer.param_groups:
        group["lr"] = ref * group.get("lr_scale", 1.0)


def plan_finetune(model: torch.nn.Module, *, mode: str, partial_blocks: int | None = None,
                  head_warmup_epochs: int = 0) -> FinetunePlan:
    """Freeze what ``mode`` does not train (timm's ``freeze``), and plan the head warm-up."""
    names = [n for n, _ in model.named_parameters()]
    head = _head_params(model)
    layers = _layer_map(model)
    head_layer = max(layers.values())
    if mode == "linear":
        trainable = set(head)
    elif mode == "partial":
        blocks = head_layer - 1  # layer 0 is the stem, the last one the head
        if not partial_blocks or partial_blocks > blocks:
            raise HypernymError(f"partial_blocks must be 1..{blocks}: {type(model).__name__}'s "
                                f"timm group matcher splits it into a stem, {blocks} blocks and "
                                "a head")
        trainable = {n for n in names if layers.get(n, head_layer) >= head_layer - partial_blocks}
        trainable |= head
    else:
        trainable = set(names)
    plan = FinetunePlan(warmup_epochs=head_warmup_epochs)
    if len(trainable) < len(names):
        plan.frozen = freeze_all_but(model, trainable)
    if head_warmup_epochs:
        head_layer_params = {n for n in names if layers.get(n, head_layer) == head_layer} | head
        plan.held_params = frozenset(trainable - head_layer_params)
        plan.held = tuple(_maximal_modules(model, keep=head_layer_params))
    return plan


def freeze_all_but(model: torch.nn.Module, trainable: set[str]) -> tuple[str, ...]:
    """Freeze (timm's ``freeze``: fixed parameters and BatchNorm statistics) the largest
    submodules none of whose parameters is in ``trainable``, and any other parameter not in it;
    the frozen modules' names (what `train_mode` keeps in eval mode)."""
    frozen = _maximal_modules(model, keep=trainable)
    freeze(model, list(frozen))
    for name, param in model.named_parameters():  # parameters held by a kept parent
        if name not in trainable:
            param.requires_grad_(False)
    return tuple(frozen)


def train_mode(model: torch.nn.Module, plan: FinetunePlan | None) -> torch.nn.Module:
    """``model.train()``, with the plan's frozen (and, during warm-up, held) modules in eval
    mode. ``model`` may be wrapped (DDP): the plan's names are the inner model's."""
    model.train()
    if plan is not None:
        inner = unwrap(model)
        for name in plan.frozen + (plan.held if plan.holding else ()):
            inner.get_submodule(name).eval()
    return model


def init_head(model: torch.nn.Module, classes: list[str], pretrained: list[str]) -> int:
    """Give ``model`` a head for ``classes``, starting from the current (pretrained) head's
    rows wherever a class is a synset the pretrained head also has; the others get timm's
    initialisation. Returns how many rows were copied (0: the head is timm's fresh one)."""
    old = model.get_classifier()
    weight = old.weight.detach().clone() if hasattr(old, "weight") else None
    bias = old.bias.detach().clone() if getattr(old, "bias", None) is not None else None
    model.reset_classifier(len(classes))
    new = model.get_classifier()
    index = {cid: i for i, cid in enumerate(pretrained) if _SYNSET.match(cid)}
    pairs = [(j, index[cid]) for j, cid in enumerate(classes) if cid in index]
    if not pairs or weight is None or new.weight.shape[1:] != weight.shape[1:]:
        return 0
    rows, source = torch.tensor([j for j, _ in pairs]), torch.tensor([i for _, i in pairs])
    with torch.no_grad():
        new.weight[rows] = weight[source].to(new.weight.dtype)
        if bias is not None and getattr(new, "bias", None) is not None:
            new.bias[rows] = bias[source].to(new.bias.dtype)
    return len(pairs)


def _head_params(model: torch.nn.Module) -> set[str]:
    ids = {id(p) for p in model.get_classifier().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _layer_map(model: torch.nn.Module) -> dict[str, int]:
    """Parameter name -> layer of timm's fine-grained group matcher (0 the stem, the last the
    head): the same layers layer-wise LR decay scales."""
    if not hasattr(model, "group_matcher"):
        raise HypernymError(f"{type(model).__name__} has no timm group_matcher(): modes "
                            "linear/partial and head warm-up need one (use mode: full)")
    return group_parameters(model, model.group_matcher(coarse=False), reverse=True)


def _maximal_modules(model: torch.nn.Module, *, keep: set[str]) -> list[str]:
    """The largest submodules none of whose parameters is in ``keep``."""
    out: list[str] = []

    def walk(prefix: str, module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            params = [f"{full}.{n}" for n, _ in child.named_parameters()]
            if not params:
                continue
            if not any(p in keep for p in params):
                out.append(full)
            else:
                walk(full + ".", child)

    walk("", model)
    return out
