"""Step time of hypernym's training loop against a bare PyTorch loop, same model and batches.

    .venv/bin/python tests/benchmarks/train_step.py [--arch resnet10t] [--steps 30]

Both run in this process on CPU over the same pre-made uint8 batches (no loader, no Ray, no
DDP), so the difference is the loop itself: normalisation on the device, autocast context,
timm's optimizer and per-step scheduler, accumulation bookkeeping, timing. Prints ms/step for
each and the overhead ratio (target: <= 1.10). Rounds alternate (bare, ours, bare, ours...)
against drift.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import timm
import torch
import torch.nn.functional as F

from hypernym.config import OptimSpec, TrainSpec
from hypernym.data.normalize import normalizer
from hypernym.train.build import build_optimizer, build_scheduler
from hypernym.train.checkpoint import TrainState
from hypernym.train.epoch import StepKit, train_epoch
from hypernym.train.losses import CrossEntropy


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


def ours(model, data, lr: float) -> float:
    optim = OptimSpec(opt="adamw", lr=lr, weight_decay=0.05)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, epochs=1, steps=len(data))
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler)
    start = time.perf_counter()
    kit = StepKit(normalize=normalizer(torch.device("cpu")), autocast=nullcontext(),
                  train=TrainSpec(epochs=1, log_every=10), loss_fn=CrossEntropy())
    train_epoch(state, data, kit, logger=None, world=1, epoch=0, steps=len(data))
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
        times["ours"].append(ours(model, data, 1e-3))
    b, o = min(times["bare"]), min(times["ours"])
    print(f"{args.arch} {args.size}px batch {args.batch}, {args.steps} steps x {args.rounds} "
          f"rounds, {torch.get_num_threads()} threads (best round)")
    print(f"  bare PyTorch loop : {b * 1e3:7.1f} ms/step")
    print(f"  hypernym loop     : {o * 1e3:7.1f} ms/step")
    print(f"  overhead ratio    : {o / b:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
