"""The core's step on one process: gradient accumulation equals the big batch, an optimizer step
per accumulation group (the last may be shorter), EMA and Mixup wired through the task, a
checkpoint round trip that restores model, optimizer, EMA and every RNG, and validation."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from timm.data import Mixup

from hypernym.data.normalize import normalizer
from hypernym.train.checkpoint import load_state, save_state
from hypernym.train.losses import CrossEntropy
from hypernym.train.tasks import ClassificationTask
from tests.unit.train.helpers import ListLoaders, tiny_model, tiny_trainer

CLASSES = 4


def batches(n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (size, 3, 8, 8), dtype=torch.uint8, generator=gen),
             torch.randint(0, CLASSES, (size,), generator=gen)) for _ in range(n)]


class GroupSizes:
    """A step record: how many microbatches each optimizer step took."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def add(self, epoch: int, step: int, batches: list) -> None:
        self.sizes.append(len(batches))


def run(data, **train):
    trainer = tiny_trainer(data, classes=CLASSES, train=train)
    groups = GroupSizes()
    trainer.records.append(groups)
    metrics = trainer.train_epoch(0)
    return trainer, groups.sizes, metrics


def test_accumulation_equals_the_big_batch():
    data = batches(4, 8)
    merged = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
              for a, b in zip(data[::2], data[1::2], strict=True)]
    accumulated, groups, _ = run(data, accum_steps=2)
    big, _, _ = run(merged)
    assert groups == [2, 2] and accumulated.state.global_step == big.state.global_step == 2
    for p, q in zip(accumulated.state.model.parameters(), big.state.model.parameters(),
                    strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_last_group_may_be_short():
    trainer, groups, metrics = run(batches(5, 4), accum_steps=2)
    assert groups == [2, 2, 1] and trainer.state.global_step == 3
    assert metrics["train/images_per_s"] > 0 and 0 <= metrics["train/data_wait_frac"] <= 1


def test_train_step_takes_any_microbatches():
    trainer = tiny_trainer(batches(1, 4), classes=CLASSES)
    microbatches = ListLoaders(batches(3, 4)).batches
    before = [p.detach().clone() for p in trainer.state.model.parameters()]
    result = trainer.train_step(microbatches)
    assert result.samples == 12 and len(result.batches) == 3 and trainer.state.global_step == 1
    assert torch.isfinite(result.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.state.model.parameters(),
                                                      strict=True))


def test_ema_mixup_and_a_checkpoint_round_trip(tmp_path):
    trainer = tiny_trainer(batches(3, 4), classes=CLASSES, ema=0.5,
                           train={"label_smoothing": 0.1})
    trainer.task = ClassificationTask(
        num_classes=CLASSES, loss_fn=CrossEntropy(0.1),
        mixup=Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1,
                    num_classes=CLASSES))
    before = copy.deepcopy(trainer.state.ema.module.state_dict())
    np.random.seed(0)
    metrics = trainer.train_epoch(0)
    trainer.state.epoch = 1
    assert np.isfinite(metrics["train/loss"]) and trainer.state.global_step == 3
    moved = trainer.state.ema.module.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in before)
    assert any(not torch.equal(trainer.state.model.state_dict()[k], moved[k]) for k in before)

    random.seed(7)
    torch.manual_seed(11)
    save_state(tmp_path, trainer.state_dict(), {"name": "t"})
    draws, crops, dropout = np.random.rand(3), [random.random() for _ in range(3)], \
        torch.rand(3)
    # A fresh trainer over a differently initialised model: everything must come back.
    fresh = tiny_trainer(batches(3, 4), classes=CLASSES, ema=0.5,
                         model=torch.nn.Sequential(torch.nn.Flatten(),
                                                   torch.nn.Linear(3 * 8 * 8, CLASSES)))
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    fresh.load_state_dict(load_state(tmp_path))
    assert (fresh.state.global_step, fresh.state.epoch) == (3, 1)
    assert np.allclose(np.random.rand(3), draws)  # mixup's numpy draws continue where they were
    assert [random.random() for _ in range(3)] == crops  # so do the in-process crops
    assert torch.equal(torch.rand(3), dropout)  # and torch's (dropout, drop-path)
    for name, value in trainer.state.model.state_dict().items():
        assert torch.equal(fresh.state.model.state_dict()[name], value)
    for name, value in trainer.state.ema.module.state_dict().items():
        assert torch.equal(fresh.state.ema.module.state_dict()[name], value)
    saved, restored = (t.state.optimizer.state_dict() for t in (trainer, fresh))
    assert saved["param_groups"] == restored["param_groups"]
    # the restored optimizer steps the new model's parameters, with the saved momentum
    for old, new in zip(trainer.state.model.parameters(), fresh.state.model.parameters(),
                        strict=True):
        assert torch.equal(fresh.state.optimizer.state[new]["momentum_buffer"],
                           trainer.state.optimizer.state[old]["momentum_buffer"])


def test_validation_reports_accuracy_of_model_and_ema():
    data = batches(2, 6)
    trainer = tiny_trainer(batches(1, 4), classes=CLASSES, ema=0.5)
    trainer.loaders = ListLoaders(batches(1, 4), val=data)
    out = trainer.validate()
    assert set(out) == {f"{p}/{m}" for p in ("val", "val_ema") for m in ("loss", "top1", "top5")}
    assert 0 <= out["val/top1"] <= out["val/top5"] == pytest.approx(1.0)  # 4 classes < top-5
    assert out["val/top1"] == out["val_ema/top1"]  # same weights, same batches
    model = tiny_model(CLASSES, 8)
    logits = torch.cat([model(normalizer(torch.device("cpu"))(x)) for x, _ in data])
    labels = torch.cat([y for _, y in data])
    assert out["val/top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_compiled_model_trains_and_keeps_plain_keys():
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    model = tiny_model(CLASSES, 8)
    keys = set(model.state_dict())
    model.compile()  # what train.compile does (in place, unlike torch.compile(model))
    trainer = tiny_trainer(batches(3, 4), classes=CLASSES, model=model)
    groups = GroupSizes()
    trainer.records.append(groups)
    trainer.train_epoch(0)
    assert groups.sizes == [1, 1, 1] and set(trainer.state.model.state_dict()) == keys
