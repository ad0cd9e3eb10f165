"""Training images/s from real shards (hypernym's reader) against synthetic tensors, same run.

    .venv/bin/python tests/benchmarks/train_throughput.py --arch resnet50 --batch 256 \
        --loader-workers 14 [--data DATASET] [--compile]

One process, one device (CUDA when there is one), hypernym's step (`train.epoch.train_epoch`: bf16
autocast on GPU, channels_last, timm AdamW, per-step scheduler). "synthetic" feeds uint8 batches
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
from contextlib import nullcontext
from pathlib import Path

import timm
import torch

from hypernym.config import OptimSpec, TrainSpec, parse_recipe
from hypernym.data.manifest import read_manifest
from hypernym.data.normalize import normalizer
from hypernym.data.reader import make_loader
from hypernym.train.build import build_optimizer, build_scheduler
from hypernym.train.checkpoint import TrainState
from hypernym.train.epoch import StepKit, train_epoch
from hypernym.train.losses import CrossEntropy


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


def measure(model, batches, kit, *, steps: int, warmup: int) -> float:
    """images/s over ``steps`` optimizer steps after ``warmup`` ones."""
    optim = OptimSpec(opt="adamw", lr=1e-4, weight_decay=0.05)
    optimizer = build_optimizer(model, optim)
    state = TrainState(model=model, optimizer=optimizer,
                       scheduler=build_scheduler(optimizer, optim, epochs=1, steps=steps + warmup))
    batches = iter(batches)
    train_epoch(state, itertools.islice(batches, warmup), kit, logger=None, world=1, epoch=0,
                steps=warmup)
    sync(kit.device)
    start = time.perf_counter()
    seen = []
    train_epoch(state, _counting(itertools.islice(batches, steps), seen), kit, logger=None,
                world=1, epoch=0, steps=steps)
    sync(kit.device)
    return sum(seen) / (time.perf_counter() - start)


def _counting(batches, seen: list[int]):
    for batch in batches:
        seen.append(len(batch[1]))
        yield batch


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
    train = TrainSpec(epochs=1, channels_last=True, compile=args.compile, log_every=10**9)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else nullcontext())
    kit = StepKit(normalize=normalizer(device), autocast=autocast, train=train,
                  loss_fn=CrossEntropy(train.label_smoothing), device=device, img_size=size)

    def model():
        torch.manual_seed(0)
        net = timm.create_model(args.arch, num_classes=classes).to(device)
        net = net.to(memory_format=torch.channels_last)
        if args.compile:
            net.compile()
        return net

    total = args.steps + args.warmup
    gen = torch.Generator(device=device).manual_seed(0)
    fake = [(torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=device,
                           generator=gen),
             torch.randint(0, classes, (args.batch,), device=device, generator=gen))
            for _ in range(4)]
    synthetic = measure(model(), itertools.islice(itertools.cycle(fake), total), kit,
                        steps=args.steps, warmup=args.warmup)

    def real_batches():
        for epoch in itertools.count():
            yield from make_loader(manifest, path, "train", rank=0, world_size=1, epoch=epoch,
                                   batch_size=args.batch, img_size=size, train=True,
                                   num_workers=args.loader_workers)

    real = measure(model(), real_batches(), kit, steps=args.steps, warmup=args.warmup)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{args.arch} batch {args.batch} on {name}, {'compiled' if args.compile else 'eager'},"
          f" {args.loader_workers} loader workers, {args.steps} steps after {args.warmup}")
    print(f"  synthetic tensors on the device : {synthetic:8.1f} img/s")
    print(f"  real shards (hypernym reader)   : {real:8.1f} img/s")
    print(f"  real / synthetic                : {real / synthetic:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
