"""LR schedules: timm's ``create_scheduler_v2`` with each schedule's own recipe keys.

Every schedule but ``plateau`` steps per optimizer update (``step_update(global step)``), so
warm-up and decay are smooth however few epochs a fine-tune has; their epoch keys
(``decay_epochs``, ``decay_milestones``, ``cooldown_epochs``) are converted to updates by timm.
``plateau`` needs a validation metric, so it steps once per epoch, after validation
(``step_epoch``); timm refuses to build it per update.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from timm.scheduler import PlateauLRScheduler, create_scheduler_v2

from hypernym.sections import OptimSpec
from hypernym.train.finetune import sync_lr

__all__ = ["build_scheduler", "step_epoch"]


class _Plateau(PlateauLRScheduler):
    """timm's plateau schedule, with torch's patience and cooldown counters in its state.

    timm 1.0.31 saves only the best metric and the last epoch, so a resumed run would restart
    the patience count; torch's ReduceLROnPlateau keeps them all in its own state dict.
    """

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reduce": self.lr_scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "reduce" in state_dict:
            self.lr_scheduler.load_state_dict(state_dict["reduce"])


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSpec, *, epochs: int,
                    steps: int):
    """The recipe's timm scheduler (or None for ``sched: none``), its LRs already applied.

    Args:
        epochs: the run's epochs (``train.epochs``); the last ``optim.cooldown_epochs`` of them
            hold ``min_lr`` after a cyclic schedule ends.
        steps: optimizer updates per epoch.
    """
    warmup_lr = optim.min_lr if optim.warmup_lr is None else optim.warmup_lr
    if optim.sched == "none":
        scheduler = None
    elif optim.sched == "plateau":
        with warnings.catch_warnings():  # timm deprecates it for not saving state: we do
            warnings.simplefilter("ignore", FutureWarning)
            scheduler = _Plateau(
                optimizer, decay_rate=optim.decay_rate, patience_t=optim.patience_epochs,
                warmup_t=optim.warmup_epochs, warmup_lr_init=warmup_lr, lr_min=optim.min_lr,
                mode=optim.plateau_mode)
    else:
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=optim.sched,
            num_epochs=epochs - optim.cooldown_epochs,
            decay_epochs=optim.decay_epochs,
            decay_milestones=list(optim.decay_milestones),
            decay_rate=optim.decay_rate,
            cooldown_epochs=optim.cooldown_epochs,
            cycle_limit=optim.cycle_limit,
            cycle_mul=optim.cycle_mul,
            cycle_decay=optim.cycle_decay,
            k_decay=optim.k_decay,
            warmup_epochs=optim.warmup_epochs,
            warmup_lr=warmup_lr,
            min_lr=optim.min_lr,
            step_on_epochs=False,
            updates_per_epoch=max(steps, 1),
        )
    sync_lr(optimizer, scheduler, global_step=0, base_lr=optim.lr, initial=True)
    return scheduler


def step_epoch(scheduler, epoch: int, metrics: dict[str, float], optim: OptimSpec) -> None:
    """After epoch ``epoch - 1`` was validated: a plateau schedule reads its metric (the
    per-update schedules have nothing to do at an epoch end)."""
    if not isinstance(scheduler, PlateauLRScheduler):
        return
    if optim.plateau_metric not in metrics:
        from hypernym.errors import HypernymError

        raise HypernymError(
            f"optim.plateau_metric {optim.plateau_metric!r} is not among this run's epoch "
            f"metrics {sorted(k for k in metrics if k.startswith('val'))}: plateau needs a "
            "validation split and one of those metrics")
    scheduler.step(epoch, float(metrics[optim.plateau_metric]))
