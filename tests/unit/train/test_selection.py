"""Which weights a run registers: the model or its EMA at an epoch (`RegisterSpec.choose`), and
the best epoch so far (`hypernym.train.selection`, `CheckpointHooks.epoch_end`)."""

from __future__ import annotations

import pytest
import torch

from hypernym.errors import HypernymError
from hypernym.sections import RegisterSpec
from hypernym.train.checkpointing import CheckpointHooks
from hypernym.train.selection import beats, epoch_choice
from tests.unit.train.helpers import tiny_trainer


def test_auto_with_an_ema_picks_the_better_of_model_and_ema():
    spec = RegisterSpec(weights="auto")
    choice = spec.choose({"val/top1": 0.6, "val_ema/top1": 0.7}, ema=True)
    assert choice == {"kind": "ema", "metric": "val_ema/top1", "value": 0.7,
                      "candidates": {"model": 0.6, "ema": 0.7}}
    assert spec.choose({"val/top1": 0.7, "val_ema/top1": 0.7}, ema=True)["kind"] == "model"
    assert spec.choose({"val/top1": 0.5}, ema=False)["kind"] == "model"  # no EMA: the model
    assert spec.choose({}, ema=True) is None  # nothing validated


def test_a_loss_metric_is_minimised_and_fixed_weights_stay_fixed():
    spec = RegisterSpec(weights="auto", metric="val/loss", mode="min")
    choice = spec.choose({"val/loss": 0.9, "val_ema/loss": 1.1}, ema=True)
    assert (choice["kind"], choice["value"]) == ("model", 0.9)
    ema = RegisterSpec(weights="ema")
    assert ema.choose({"val/top1": 0.9, "val_ema/top1": 0.1}, ema=True)["kind"] == "ema"


def test_epoch_choice_names_the_metrics_it_had():
    with pytest.raises(HypernymError, match=r"val/map.*\['val/loss', 'val/top1'\]"):
        epoch_choice(RegisterSpec(metric="val/map"), {"val/top1": 0.5, "val/loss": 1.0,
                                                      "train/loss": 2.0}, ema=False)


def test_beats_is_strict_in_either_direction():
    best = {"value": 0.5}
    assert beats({"value": 0.6}, best, "max") and not beats({"value": 0.5}, best, "max")
    assert beats({"value": 0.4}, best, "min") and not beats({"value": 0.6}, best, "min")
    assert beats({"value": 0.0}, None, "max")


class Kept(CheckpointHooks):
    """The checkpoints' payloads, in memory."""

    def __init__(self, **kwargs) -> None:
        super().__init__(rank=0, recipe={}, **kwargs)
        self.saved: dict[str, dict] = {}

    def save(self, payload, metrics, *, name: str) -> None:
        self.saved[name] = payload


def test_the_best_epoch_is_kept_across_later_worse_epochs():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    trainer = tiny_trainer([(images, torch.zeros(4, dtype=torch.int64))], classes=2, ema=0.5)
    hooks = Kept(registry=RegisterSpec(select="best", weights="auto"), ema=True)
    scores = [(0.4, 0.3), (0.7, 0.8), (0.6, 0.5)]  # (model, ema) per epoch: epoch 2's EMA wins
    weights = {}
    for epoch, (model, ema) in enumerate(scores, start=1):
        with torch.no_grad():
            for p in trainer.state.model.parameters():
                p.fill_(float(epoch))  # each epoch's weights are told apart by their value
            for p in trainer.state.ema.module.parameters():
                p.fill_(float(-epoch))
        trainer.state.epoch = epoch
        hooks.epoch_end(trainer, {"val/top1": model, "val_ema/top1": ema})
        weights[epoch] = {k: v.clone() for k, v in trainer.state.ema.module.state_dict().items()}
    best = hooks.saved["epoch-0003"]["best"]
    assert (best["epoch"], best["kind"], best["value"]) == (2, "ema", 0.8)
    assert best["candidates"] == {"model": 0.7, "ema": 0.8}
    assert all(torch.equal(best["weights"][k], v) for k, v in weights[2].items())
    assert hooks.saved["epoch-0001"]["best"]["epoch"] == 1  # each checkpoint carries its best
