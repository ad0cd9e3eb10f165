"""Every LR schedule a recipe offers builds, steps and reads its own keys (timm's
create_scheduler_v2 under the hood); plateau steps per epoch on a validation metric."""

from __future__ import annotations

import pytest
import torch

from hypernym.config import parse_recipe
from hypernym.errors import HypernymError
from hypernym.sections import SCHEDULES
from hypernym.train.schedulers import build_scheduler

STEPS = 4  # optimizer updates per epoch


def optim(**keys):
    recipe = parse_recipe({"kind": "pretrain", "name": "t", "data": {"path": "unused"},
                           "model": {"arch": "resnet10t"}, "train": {"epochs": 6},
                           "optim": {"lr": 1.0, "min_lr": 0.0, **keys}})
    return recipe.optim


def lrs_by_epoch(spec, metrics=None, epochs: int = 6) -> list[float]:
    """The LR at the start of each epoch, stepping the way the loop does."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=spec.lr)
    scheduler = build_scheduler(optimizer, spec, epochs=epochs, steps=STEPS)
    from hypernym.train.schedulers import step_epoch
    out, step = [], 0
    for epoch in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        for _ in range(STEPS):
            optimizer.step()
            step += 1
            if scheduler is not None:
                scheduler.step_update(num_updates=step)
        step_epoch(scheduler, epoch + 1, (metrics or {}).get(epoch, {"val/top1": 0.5}), spec)
    return out


@pytest.mark.parametrize("sched", SCHEDULES)
def test_every_schedule_builds_and_steps(sched):
    extra = {"decay_epochs": 2} if sched in ("wsd", "rsqrt") else {}
    lrs = lrs_by_epoch(optim(sched=sched, warmup_epochs=1, warmup_lr=0.1, **extra))
    assert len(lrs) == 6 and all(0 <= lr <= 1.0 for lr in lrs)
    if sched != "none":
        assert lrs[0] == pytest.approx(0.1)  # the warm-up's start, applied before step 1


def test_step_decays_at_its_own_interval():
    assert lrs_by_epoch(optim(sched="step", decay_epochs=2, decay_rate=0.5)) == \
        pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_multistep_decays_at_its_milestones():
    assert lrs_by_epoch(optim(sched="multistep", decay_milestones=[1, 4], decay_rate=0.1)) == \
        pytest.approx([1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_cooldown_holds_min_lr():
    lrs = lrs_by_epoch(optim(sched="cosine", cooldown_epochs=2, min_lr=0.01))
    assert lrs[0] == 1 and lrs[4] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.01)
    assert lrs[3] > 0.01


def test_plateau_steps_per_epoch_on_its_metric():
    """A loss that stops improving after epoch 1 decays the LR once patience runs out."""
    losses = {0: 2.0, 1: 1.0, 2: 1.5, 3: 1.5, 4: 1.5, 5: 1.5}
    spec = optim(sched="plateau", plateau_metric="val/loss", patience_epochs=1,
                 decay_rate=0.5)
    assert spec.plateau_mode == "min"
    lrs = lrs_by_epoch(spec, {e: {"val/loss": v} for e, v in losses.items()})
    assert lrs == pytest.approx([1, 1, 1, 1, 0.5, 0.5])


def test_plateau_keeps_its_patience_across_a_restore():
    spec = optim(sched="plateau", patience_epochs=2)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    first = build_scheduler(optimizer, spec, epochs=6, steps=STEPS)
    for epoch, top1 in enumerate([0.5, 0.4], start=1):  # one bad epoch
        first.step(epoch, top1)
    again = build_scheduler(optimizer, spec, epochs=6, steps=STEPS)
    again.load_state_dict(first.state_dict())
    assert again.lr_scheduler.num_bad_epochs == 1


def test_plateau_needs_its_metric():
    from hypernym.train.schedulers import step_epoch

    spec = optim(sched="plateau")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, spec, epochs=6, steps=STEPS)
    with pytest.raises(HypernymError, match="validation split"):
        step_epoch(scheduler, 1, {"train/loss": 1.0}, spec)


def test_a_key_the_schedule_ignores_is_an_error():
    with pytest.raises(HypernymError, match="does not read decay_milestones"):
        optim(sched="step", decay_milestones=[2])
    with pytest.raises(HypernymError, match="cooldown_epochs"):
        optim(sched="cosine", cooldown_epochs=6)
