"""What distillation costs: a training step with a teacher store and with an online teacher,
against the same step without a teacher; and `hypernym distill store`'s throughput.

    .venv/bin/python tests/benchmarks/distill.py [--classes 100] [--images 2000] [--size 96]

In one run, in a throwaway hypernym home: generated JPEGs prepared into shards (Ray tasks), a
teacher (timm ``--teacher``, random weights: only its cost matters) registered in MLflow, its
teacher store written by Ray actors (one per core), then ``--rounds`` alternating rounds of
``--steps`` training steps of the student through the core (`Trainer.train_epoch`) over the real
shards, with the loader in the training process (``loader_workers: 0``: its work counts in the
step), for each of: no teacher, the store (``train.distill.store``), the teacher online; and
the training loader alone (no model), without a teacher and with the store. Prints ms/step (the
median step over all rounds: on a shared machine a burst of other work lands on a few steps, not
on the median) and the ratios (target for the store: <= 1.05), the loader's ms/batch and what the
store adds to it, the store's images/s per core with where the time goes, its bytes per view,
and both extrapolated to ImageNet-21K-P (11.8 M training images) at N=50 views, K=10.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

P21K_IMAGES = 11_797_647  # ImageNet-21K-P (winter21) training images


def make_images(root: Path, classes: int, images: int, side: int = 128) -> None:
    """Smooth random colour fields with noise as JPEGs, a folder per class."""
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"c{i % classes:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        pixels = np.asarray(Image.fromarray(base).resize((side, side), Image.BILINEAR),
                            np.float32) + rng.normal(0, 12, (side, side, 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        (folder / f"img{i}.jpg").write_bytes(buffer.getvalue())


def register_teacher(arch: str, dataset, size: int) -> str:
    import timm

    from hypernym.registry.card import ModelCard
    from hypernym.registry.models import register_model
    from hypernym.tracking import start_run

    run_id = start_run(experiment="bench", run_name="teacher", tags={})
    model = timm.create_model(arch, num_classes=len(dataset.classes))
    card = ModelCard(arch=arch, num_classes=len(dataset.classes),
                     classes=[{"id": c.id, "name": c.name} for c in dataset.classes],
                     input_size=[3, size, size], mean=[0.485, 0.456, 0.406],
                     std=[0.229, 0.224, 0.225], task="pretrain", run_id=run_id)
    reg = register_model(run_id=run_id, name="bench-teacher", model=model, card=card)
    return f"{reg.name}/{reg.version}"


def step_times(recipe, steps: int) -> list[float]:
    """Seconds of each of ``steps`` steps of the core's epoch loop (`Trainer.train_epoch`),
    after a warm-up epoch: a step is the time between two batches handed to the loop (the
    training step on one, the loading of the next)."""
    from hypernym.train import Trainer

    trainer = Trainer.from_recipe(recipe)
    ticks: list[float] = []

    class First:
        """The shard loaders, cut to ``steps`` batches."""

        def __init__(self, loaders):
            self.loaders = loaders

        def __getattr__(self, name):
            return getattr(self.loaders, name)

        def train(self, epoch, progress):
            return _Cut(self.loaders.train(epoch, progress), steps, ticks)

    trainer.loaders = First(trainer.loaders)
    trainer.train_epoch(0)  # warm-up: the allocator, the first sidecars, the teacher's kernels
    ticks.clear()
    trainer.train_epoch(1)
    return [b - a for a, b in itertools.pairwise(ticks)]


def loader_time(recipe, batches: int, epoch: int) -> float:
    """Seconds per batch of the training loader alone (no model), after its first batch (the
    shuffle buffer's fill, the same with and without a store)."""
    from hypernym.data.schedule import EpochProgress
    from hypernym.train import Trainer

    loaders = Trainer.from_recipe(recipe).loaders
    batch_iter = iter(loaders.train(epoch, EpochProgress(loaders.split_sizes(), epoch)))
    next(batch_iter)
    start = time.perf_counter()
    for _ in range(batches):
        next(batch_iter)
    return (time.perf_counter() - start) / batches


class _Cut:
    """The first ``steps`` batches of a loader; ``ticks`` gets the time each is handed out,
    and the time the loop comes back after the last."""

    def __init__(self, loader, steps: int, ticks: list[float]) -> None:
        self.loader, self.steps, self.ticks = loader, steps, ticks

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _, batch in zip(range(self.steps), self.loader, strict=False):
            self.ticks.append(time.perf_counter())
            yield batch
        self.ticks.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--student", default="resnet10t")
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--topk", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HYPERNYM_HOME"] = str(Path(tmp) / "home")
        run(args, Path(tmp))


def run(args, tmp: Path) -> None:
    import ray

    from hypernym.config import parse_recipe
    from hypernym.data.dataset import open_dataset
    from hypernym.data.prepare import prepare
    from hypernym.runtime import configure_logging
    from hypernym.train.distill.store_job import write_store

    configure_logging()
    cores = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cores, include_dashboard=False)
    make_images(tmp / "raw", args.classes, args.images)
    prepare(parse_recipe({"kind": "prepare", "source": str(tmp / "raw"),
                          "output": str(tmp / "ds"), "val_per_class": 0, "min_per_class": 0,
                          "image_size": int(args.size * 1.15), "resize": "shorter",
                          "shard_samples": 256}), show_progress=False)
    dataset = open_dataset(str(tmp / "ds"))
    teacher = register_teacher(args.teacher, dataset, args.size)
    store = write_store(teacher, str(tmp / "ds"), out=str(tmp / "store"), views=args.views,
                        topk=args.topk, show_progress=False)
    ray.shutdown()

    def recipe(distill):
        return parse_recipe({
            "kind": "pretrain", "name": "bench",
            "data": {"path": str(tmp / "ds"), "img_size": args.size, "batch_size": args.batch},
            "model": {"arch": args.student}, "optim": {"lr": 1e-3},
            "train": {"epochs": 2, "log_every": 1000, "system_metrics_s": None,
                      **({"distill": distill} if distill else {})},
            "scaling": {"num_workers": 1}})

    runs = {"no teacher": recipe(None), "store": recipe({"store": str(tmp / "store")}),
            "online": recipe({"teacher": teacher})}
    times = {name: [] for name in runs}
    loader = {name: [] for name in ("no teacher", "store")}
    for round_no in range(args.rounds):
        for name, r in runs.items():
            times[name] += step_times(r, args.steps)
        for name in loader:  # a fresh epoch each round: another shard order
            loader[name].append(loader_time(runs[name], args.loader_batches, round_no + 2))
    median = {name: statistics.median(t) for name, t in times.items()}
    report(args, cores, median, {name: min(t) for name, t in loader.items()}, store)


def report(args, cores: int, step: dict[str, float], loader: dict[str, float], store) -> None:
    import torch

    s = store.stats
    per_core = s["images_per_s"] / s["workers"]
    print(f"student {args.student}, {args.size}px, batch {args.batch}, {args.classes} classes; "
          f"median of {args.steps} steps x {args.rounds} rounds, loader in the training "
          f"process, {torch.get_num_threads()} threads")
    for name, t in step.items():
        print(f"  {name:<11}: {t * 1e3:7.1f} ms/step")
    print(f"  store / no teacher : {step['store'] / step['no teacher']:.3f}  (target <= 1.05)")
    print(f"  online / no teacher: {step['online'] / step['no teacher']:.3f}")
    extra = loader["store"] - loader["no teacher"]
    print(f"loader alone ({args.loader_batches} batches, best of {args.rounds}): no teacher "
          f"{loader['no teacher'] * 1e3:.1f} ms/batch, store {loader['store'] * 1e3:.1f} "
          f"ms/batch: the store adds {extra / args.batch * 1e3:.3f} ms/sample, "
          f"{extra / step['no teacher']:.1%} of a step without a teacher")
    images = s["images"]
    print(f"distill store: teacher {args.teacher} at {args.size}px, {store.views} views x "
          f"top-{args.topk}, {int(images)} images on {int(s['workers'])} actors x 1 core: "
          f"{s['images_per_s']:.1f} images/s = {per_core:.1f} images/s per core "
          f"({per_core * store.views:.0f} views/s per core)")
    work = s["crop_s"] + s["teacher_s"] + s["write_s"]
    print(f"  actor time: teacher {s['teacher_s'] / work:.0%}, decode+crops "
          f"{s['crop_s'] / work:.0%}, top-K+write {s['write_s'] / work:.0%}; "
          f"CPU side alone {images / (s['crop_s'] + s['write_s']) :.0f} images/s per core")
    hours = P21K_IMAGES / per_core / 3600 * 50 / store.views
    print(f"  21K-P at N=50 with this teacher on CPU: {hours:,.0f} core-hours (the teacher's "
          "share moves to GPUs there)")
    cpu_side = (s["crop_s"] + s["write_s"]) / images * 50 / store.views
    print(f"  21K-P at N=50, CPU side alone: {P21K_IMAGES * cpu_side / 3600:,.0f} core-hours")
    # box (4 x uint16), flip, K fp16 probabilities, K uint16 class ids, the fp16 rest
    array = 8 + 1 + 2 * args.topk + 2 * args.topk + 2
    overhead = (store.bytes_per_view - array) * store.views  # keys and header, per image
    per_view_50 = 8 + 1 + 2 * 10 + 2 * 10 + 2 + overhead / 50
    print(f"store size: {store.bytes_per_view:.1f} bytes per view measured at N={store.views}, "
          f"K={args.topk} (arrays {array} B/view, {overhead:.1f} B/image of keys and header); "
          f"at N=50, K=10: {per_view_50:.1f} B/view, 21K-P "
          f"{P21K_IMAGES * 50 * per_view_50 / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
