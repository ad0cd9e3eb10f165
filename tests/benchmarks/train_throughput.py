"""Training images/s from real shards (hypernym's reader) against synthetic tensors, same run.

    .venv/bin/python tests/benchmarks/train_throughput.py --arch resnet50 --batch 256 \
        --loader-workers 14 [--data DATASET] [--compile]

One process, one device (CUDA when there is one), hypernym's training core
(`hypernym.train.Trainer.train_epoch`: bf16 autocast on GPU, channels_last, timm AdamW, per-step
scheduler). "synthetic" feeds uint8 batches
already on the device; "real" streams a prepared dataset through `make_loader` (decode, crop,
flip in loader processes, pinned memory). Prints images/s for each, after warm-up steps, and the
ratio real/synthetic (target on a GPU machine: >= 0.9). Without --data it prepares a small
21K-P-sized dataset (224 px JPEGs) under --work first.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import timm
import torch

from hypernym.config import parse_recipe
from hypernym.data.manifest import read_manifest
from hypernym.data.reader import Sample, make_loader
from hypernym.data.schedule import EpochProgress
from hypernym.train import ClassificationTask, Trainer
from hypernym.train.checkpoint import TrainState
from hypernym.train.finetune import FinetunePlan
from hypernym.train.losses import CrossEntropy
from hypernym.train.model import build_optimizer
from hypernym.train.schedulers import build_scheduler


def prepared(work: Path, images_per_class: int) -> str:
    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    out = work / "shards"
    if not (out / "manifest.json").exists():
        make_winter21(work / "raw", images_per_class=images_per_class, image_size=(320, 256))
        prepare(parse_recipe({"kind": "prepare", "source": str(work / "raw"), "output": str(out),
                              "val_per_class": 0, "min_per_class": 0, "image_size": 224,
                              "resize": "squish", "shard_samples": 500}), show_progress=False)
    return str(out)


class Stream:
    """Loaders for the core that hand out the next ``n`` batches of one shared stream."""

    def __init__(self, batches) -> None:
        self.batches, self.n = iter(batches), 0

    def split_sizes(self, split="train"):
        return [1]

    def steps_per_epoch(self):
        return self.n

    def has(self, split):
        return False

    def train(self, epoch, progress):
        return _Take(self.batches, self.n)


class _Take:
    def __init__(self, batches, n: int) -> None:
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(self.batches, self.n)


def measure(model, batches, recipe, device, *, classes: int, steps: int, warmup: int) -> float:
    """images/s over ``steps`` optimizer steps after ``warmup`` ones."""
    plan, stream = FinetunePlan(), Stream(batches)
    optimizer = build_optimizer(model, recipe.optim, plan)
    state = TrainState(model=model, optimizer=optimizer, progress=EpochProgress([1]),
                       scheduler=build_scheduler(optimizer, recipe.optim, epochs=1,
                                                 steps=steps + warmup))
    trainer = Trainer(recipe=recipe, task=ClassificationTask(num_classes=classes,
                                                             loss_fn=CrossEntropy()),
                      state=state, plan=plan, loaders=stream, device=device)
    stream.n = warmup
    trainer.train_epoch(0)
    sync(device)
    start = time.perf_counter()
    stream.n = steps
    seen = trainer.train_epoch(0)
    sync(device)
    return steps * recipe.data.batch_size / (time.perf_counter() - start) if seen else 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--data", help="a prepared dataset (default: prepare a small one)")
    parser.add_argument("--images-per-class", type=int, default=400)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(args.work or tempfile.mkdtemp(prefix="hypernym-throughput-"))
    path = args.data or prepared(work, args.images_per_class)
    manifest = read_manifest(path)
    classes, size = len(manifest.classes), 224
    recipe = parse_recipe({
        "kind": "pretrain", "name": "bench", "data": {"path": path, "batch_size": args.batch},
        "model": {"arch": args.arch}, "optim": {"opt": "adamw", "lr": 1e-4},
        "train": {"epochs": 1, "channels_last": True, "compile": args.compile,
                  "log_every": 10**9}})

    def model():
        torch.manual_seed(0)
        net = timm.create_model(args.arch, num_classes=classes).to(device)
        net = net.to(memory_format=torch.channels_last)
        if args.compile:
            net.compile()
        return net

    total = args.steps + args.warmup
    gen = torch.Generator(device=device).manual_seed(0)
    ids = torch.arange(args.batch)
    fake = [Sample(torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8,
                                 device=device, generator=gen),
                   torch.randint(0, classes, (args.batch,), device=device, generator=gen),
                   ids, torch.zeros_like(ids))
            for _ in range(4)]
    synthetic = measure(model(), itertools.islice(itertools.cycle(fake), total), recipe, device,
                        classes=classes, steps=args.steps, warmup=args.warmup)

    def real_batches():
        for epoch in itertools.count():
            yield from make_loader(manifest, path, "train", rank=0, world_size=1, epoch=epoch,
                                   batch_size=args.batch, img_size=size, train=True,
                                   num_workers=args.loader_workers)

    real = measure(model(), real_batches(), recipe, device, classes=classes, steps=args.steps,
                   warmup=args.warmup)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{args.arch} batch {args.batch} on {name}, {'compiled' if args.compile else 'eager'},"
          f" {args.loader_workers} loader workers, {args.steps} steps after {args.warmup}")
    print(f"  synthetic tensors on the device : {synthetic:8.1f} img/s")
    print(f"  real shards (hypernym reader)   : {real:8.1f} img/s")
    print(f"  real / synthetic                : {real / synthetic:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
