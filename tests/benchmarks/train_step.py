"""Step time of hypernym's training core against a bare PyTorch loop, same model and batches.

    .venv/bin/python tests/benchmarks/train_step.py [--arch resnet10t] [--steps 30]

Both run in this process on CPU over the same pre-made uint8 batches (no loader, no Ray, no
DDP), so the difference is the core itself (`hypernym.train.Trainer.train_epoch`): normalisation
on the device, the task's loss, autocast context, timm's optimizer and per-step scheduler,
microbatch grouping, step records, timing. Prints ms/step for each and the overhead ratio
(target: <= 1.02). Rounds alternate (bare, ours, bare, ours...) against drift.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
import torch.nn.functional as F

from hypernym.config import parse_recipe
from hypernym.data.reader import Sample
from hypernym.data.schedule import EpochProgress
from hypernym.train import ClassificationTask, Trainer
from hypernym.train.checkpoint import TrainState
from hypernym.train.finetune import FinetunePlan
from hypernym.train.losses import CrossEntropy
from hypernym.train.model import build_optimizer
from hypernym.train.schedulers import build_scheduler


def batches(n: int, size: int, batch: int, classes: int):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen),
             torch.randint(0, classes, (batch,), generator=gen)) for _ in range(n)]


def bare(model, data, lr: float) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    model.train()
    start = time.perf_counter()
    for images, labels in data:
        loss = F.cross_entropy(model((images.float() - mean) / std), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(data)


class Batches:
    """The pre-made batches as the core's loaders (the same list every epoch)."""

    def __init__(self, data) -> None:
        self.samples = [Sample(x, y, torch.arange(len(y)), torch.zeros(len(y), dtype=torch.int64))
                        for x, y in data]

    def split_sizes(self, split="train"):
        return [len(self.samples[0].id)]

    def steps_per_epoch(self):
        return len(self.samples)

    def has(self, split):
        return False

    def train(self, epoch, progress):
        return self.samples


def ours(model, data, lr: float, classes: int) -> float:
    recipe = parse_recipe({"kind": "pretrain", "name": "bench", "data": {"path": "unused"},
                           "model": {"arch": "resnet10t"},
                           "optim": {"opt": "adamw", "lr": lr, "weight_decay": 0.05},
                           "train": {"epochs": 1, "log_every": 10}})
    plan = FinetunePlan()
    optimizer = build_optimizer(model, recipe.optim, plan)
    scheduler = build_scheduler(optimizer, recipe.optim, epochs=1, steps=len(data))
    loaders = Batches(data)
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler,
                       progress=EpochProgress(loaders.split_sizes()))
    trainer = Trainer(recipe=recipe, task=ClassificationTask(num_classes=classes,
                                                             loss_fn=CrossEntropy()),
                      state=state, plan=plan, loaders=loaders, device=torch.device("cpu"))
    start = time.perf_counter()
    trainer.train_epoch(0)
    return (time.perf_counter() - start) / len(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = batches(args.steps, args.size, args.batch, classes=100)
    model = timm.create_model(args.arch, num_classes=100)
    bare(model, data[:3], 1e-3)  # warm-up: allocator, kernels
    times = {"bare": [], "ours": []}
    for _ in range(args.rounds):
        times["bare"].append(bare(model, data, 1e-3))
        times["ours"].append(ours(model, data, 1e-3, classes=100))
    b, o = min(times["bare"]), min(times["ours"])
    print(f"{args.arch} {args.size}px batch {args.batch}, {args.steps} steps x {args.rounds} "
          f"rounds, {torch.get_num_threads()} threads (best round)")
    print(f"  bare PyTorch loop : {b * 1e3:7.1f} ms/step")
    print(f"  hypernym core     : {o * 1e3:7.1f} ms/step")
    print(f"  overhead ratio    : {o / b:.3f}  (target <= 1.02)")


if __name__ == "__main__":
    main()
