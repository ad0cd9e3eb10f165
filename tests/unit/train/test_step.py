"""The step's numerics on one process: gradient accumulation equals the big batch, optimizer
steps and progress callbacks per accumulation group, EMA and mixup wired through timm, and the
training state (EMA, numpy and Python RNG) surviving a checkpoint round trip."""

from __future__ import annotations

import copy
import random
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3

from hypernym.config import TrainSpec
from hypernym.data.normalize import normalizer
from hypernym.train.checkpoint import TrainState, load_state, save_state
from hypernym.train.epoch import StepKit, evaluate, train_epoch
from hypernym.train.losses import CrossEntropy

CLASSES = 4


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)  # no batch norm: a big batch and its halves give the same gradient
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, CLASSES))


def batches(n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (size, 3, 8, 8), dtype=torch.uint8, generator=gen),
             torch.randint(0, CLASSES, (size,), generator=gen)) for _ in range(n)]


def kit(**train) -> StepKit:
    spec = TrainSpec(epochs=1, **train)
    return StepKit(normalize=normalizer(torch.device("cpu")), autocast=nullcontext(),
                   train=spec, loss_fn=CrossEntropy(spec.label_smoothing), img_size=8)


def run(model, data, **train):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    state = TrainState(model=model, optimizer=optimizer)
    groups = GroupSizes()
    train_epoch(state, data, kit(**train), logger=None, world=1, epoch=0, steps=len(data),
                records=[groups])
    return state, groups.sizes


class GroupSizes:
    """A step record: how many batches each optimizer step took."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def add(self, epoch: int, step: int, batches: list) -> None:
        self.sizes.append(len(batches))


def test_accumulation_equals_the_big_batch():
    data = batches(4, 8)
    merged = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
              for a, b in zip(data[::2], data[1::2], strict=True)]
    accumulated, groups = run(tiny_model(), data, accum_steps=2)
    big, _ = run(tiny_model(), merged)
    assert groups == [2, 2] and accumulated.global_step == big.global_step == 2
    for p, q in zip(accumulated.model.parameters(), big.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_last_group_may_be_short():
    state, groups = run(tiny_model(), batches(5, 4), accum_steps=2)
    assert groups == [2, 2, 1] and state.global_step == 3


def test_ema_mixup_and_a_checkpoint_round_trip(tmp_path):
    model = tiny_model()
    ema = ModelEmaV3(model, decay=0.5)
    before = copy.deepcopy(ema.module.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    state = TrainState(model=model, optimizer=optimizer, ema=ema)
    step_kit = kit(label_smoothing=0.1)
    step_kit.mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1,
                           num_classes=CLASSES)
    np.random.seed(0)
    metrics = train_epoch(state, batches(3, 4), step_kit, logger=None, world=1, epoch=0, steps=3)
    assert np.isfinite(metrics["train/loss"]) and state.global_step == 3
    moved = ema.module.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in before)
    assert any(not torch.equal(model.state_dict()[k], moved[k]) for k in before)

    random.seed(7)
    save_state(tmp_path, state.state_dict(), {"name": "t"})
    draws, crops = np.random.rand(3), [random.random() for _ in range(3)]
    fresh = TrainState(model=tiny_model(), optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                       ema=ModelEmaV3(tiny_model(), decay=0.5))
    np.random.seed(123)
    random.seed(123)
    fresh.load_state_dict(load_state(tmp_path))
    assert fresh.global_step == 3
    assert np.allclose(np.random.rand(3), draws)  # mixup's numpy draws continue where they were
    assert [random.random() for _ in range(3)] == crops  # so do the in-process crops
    for k, v in ema.module.state_dict().items():
        assert torch.equal(fresh.ema.module.state_dict()[k], v)


def test_evaluate_reports_accuracy():
    model = tiny_model()
    data = batches(2, 6)
    out = evaluate({"val": model, "val_ema": copy.deepcopy(model)}, data, kit())
    assert set(out) == {f"{p}/{m}" for p in ("val", "val_ema") for m in ("loss", "top1", "top5")}
    assert 0 <= out["val/top1"] <= out["val/top5"] == pytest.approx(1.0)  # 4 classes < top-5
    assert out["val/top1"] == out["val_ema/top1"]  # same weights, same batches
    logits = torch.cat([model(normalizer(torch.device("cpu"))(x)) for x, _ in data])
    labels = torch.cat([y for _, y in data])
    assert out["val/top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_compiled_model_trains_and_keeps_plain_keys():
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    model = tiny_model()
    keys = set(model.state_dict())
    model.compile()  # what train.compile does (in place, unlike torch.compile(model))
    state, groups = run(model, batches(3, 4), accum_steps=1)
    assert groups == [1, 1, 1] and set(state.model.state_dict()) == keys
