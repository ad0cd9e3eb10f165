"""Cost of the transfer probes against one fine-tune epoch, same images and backbone, same run.

    .venv/bin/python tests/benchmarks/probe.py [--images 2000] [--arch resnet10t] [--img-size 64]
                                               [--finetune-ray]

Generates ``--images`` pictures with the demo's generator (16 WordNet classes, 400x350 JPEGs;
nothing downloaded) and prepares them as the demo prepares its data (shorter side to
1.15 x img-size, 25 val images per class: 2,000 images are 1,600 train + 400 val). Then:

(a) baseline: one fine-tune epoch as `hypernym finetune` runs it, measured in this process: the
    training loop's own parts (`build_model`, timm's AdamW and cosine schedule, the loop's
    step kit and training loader with random-resized crops and flips, `train_epoch`, then the
    loop's validation pass), one worker using every core, no Ray, no DDP, no MLflow logging.
    The demo's fine-tune recipe: batch 32, AdamW lr 2e-3, full mode.
(b) the probes as `hypernym probe` runs them: pooled features of every train and val image
    (`extract_features_ray`: one Ray task per shard, one core each), then k-NN (k = 10 and 20)
    and the logistic-regression probe on all the training features.
With ``--finetune-ray`` it also runs (c): the real fine-tune (`run_recipe`, 2 Ray Train workers,
1 epoch, its own MLflow home), timed end to end and by its logged throughput.

The backbone is the architecture at random init (timings do not depend on the weights; the
accuracies printed are those of random features). Prints seconds and images/s for each part,
and the ratio probe / fine-tune epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.* helpers

import timm  # noqa: E402
import torch  # noqa: E402

from hypernym.config import parse_recipe  # noqa: E402
from hypernym.data.demo import make_winter21  # noqa: E402
from hypernym.data.prepare import prepare  # noqa: E402
from hypernym.runtime import configure_logging, ensure_ray  # noqa: E402
from hypernym.train import Trainer  # noqa: E402
from hypernym.transfer.probe import (  # noqa: E402
    extract_features_ray,
    knn_accuracy,
    linear_probe_accuracy,
)

CLASSES = 16  # the demo's miniature winter21


def finetune_recipe(args, dataset: Path, **extra) -> dict:
    """The demo's fine-tune recipe (hypernym/demo/__init__.py), one epoch, from random init."""
    return {"kind": "finetune", "name": "bench-finetune", "experiment": "bench", "backbone": None,
            "model": {"arch": args.arch},
            "data": {"path": str(dataset), "img_size": args.img_size, "batch_size": args.batch,
                     "crop_scale": [0.5, 1.0]},
            "optim": {"opt": "adamw", "lr": 2e-3, "weight_decay": 0.01, "warmup_epochs": 0},
            "train": {"epochs": 1}, "registry": {"name": None}, **extra}


def finetune_epoch(args, dataset: Path) -> dict:
    """One fine-tune epoch through the training core in this process (no Ray), then its
    validation: the metrics, ``train_s`` and ``val_s``."""
    trainer = Trainer.from_recipe(parse_recipe(finetune_recipe(args, dataset)))
    epoch, train_s = timed(lambda: trainer.train_epoch(0))
    validation, val_s = timed(trainer.validate)
    return {**epoch, **validation, "train_s": train_s, "val_s": val_s}


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def probes(args, dataset: Path) -> dict:
    model = timm.create_model(args.arch, pretrained=False, num_classes=0).eval()
    cfg = model.pretrained_cfg
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))

    def features():
        return [extract_features_ray(model, str(dataset), split, img_size=args.img_size,
                                     mean=mean, std=std) for split in ("train", "val")]

    _, cold = timed(features)  # the first call also starts Ray's worker processes
    ((train_x, train_y), (val_x, val_y)), warm = timed(features)
    out = {"features_cold_s": cold, "features_s": warm, "images": len(train_x) + len(val_x),
           "dim": train_x.shape[1]}
    for k in (10, 20):
        out[f"knn@{k}"], out[f"knn@{k}_s"] = timed(
            lambda k=k: knn_accuracy(train_x, train_y, val_x, val_y, k=k))
    out["linear"], out["linear_s"] = timed(
        lambda: linear_probe_accuracy(train_x, train_y, val_x, val_y))
    return out


def finetune_ray(args, dataset: Path, home: Path) -> tuple[float, dict]:
    from hypernym.recipes import run_recipe

    os.environ["HYPERNYM_HOME"] = str(home)
    recipe = parse_recipe(finetune_recipe(args, dataset, scaling={
        "num_workers": 2, "cpus_per_worker": 1}), source="benchmark")
    result, seconds = timed(lambda: run_recipe(recipe))
    return seconds, result.metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000, help="a multiple of 16")
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--finetune-ray", action="store_true",
                        help="also run the real fine-tune on Ray Train (c)")
    args = parser.parse_args()
    configure_logging()
    per_class = args.images // CLASSES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["HYPERNYM_HOME"] = str(root / "home")
        make_winter21(root / "raw", images_per_class=per_class)
        ensure_ray()
        prepare(parse_recipe({
            "kind": "prepare", "source": str(root / "raw"), "output": str(root / "ds"),
            "source_format": "winter21", "val_per_class": per_class // 5, "min_per_class": 0,
            "image_size": int(args.img_size * 1.15), "resize": "shorter", "shard_samples": 128,
        }), show_progress=False)
        epoch = finetune_epoch(args, root / "ds")
        probe = probes(args, root / "ds")
        ray_run = finetune_ray(args, root / "ds", root / "ray-home") if args.finetune_ray \
            else None

    n, train_n = probe["images"], per_class * CLASSES - CLASSES * (per_class // 5)
    fine_s = epoch["train_s"] + epoch["val_s"]
    probe_s = probe["features_s"] + probe["knn@10_s"] + probe["knn@20_s"] + probe["linear_s"]
    cores = os.cpu_count() or 1
    print(f"{n} images ({train_n} train + {n - train_n} val, {CLASSES} classes), {args.arch} at "
          f"{args.img_size} px, {cores} cores, torch {torch.get_num_threads()} threads")
    print(f"(a) fine-tune epoch, in process        : train {epoch['train_s']:6.1f} s "
          f"({train_n / epoch['train_s']:6.1f} img/s) + val {epoch['val_s']:5.1f} s = "
          f"{fine_s:6.1f} s  (val top-1 {epoch['val/top1']:.3f})")
    print(f"(b) probe features, Ray tasks          : {probe['features_s']:6.1f} s "
          f"({n / probe['features_s']:6.1f} img/s; first call {probe['features_cold_s']:.1f} s "
          f"with worker start), {probe['dim']}-d")
    for name in ("knn@10", "knn@20", "linear"):
        print(f"    {name:<7} probe                     : {probe[f'{name}_s']:6.2f} s  "
              f"(val top-1 {probe[name]:.3f})")
    print(f"    probes total                       : {probe_s:6.1f} s")
    print(f"ratio probe / fine-tune epoch: {probe_s / fine_s:.2f} "
          f"(features alone {probe['features_s'] / fine_s:.2f})")
    if ray_run is not None:
        seconds, metrics = ray_run
        print(f"(c) `hypernym finetune`, 1 epoch, Ray  : {seconds:6.1f} s end to end "
              "(Ray Train start, epoch, validation, end-of-run report; nothing registered); "
              f"logged "
              f"{metrics.get('train/images_per_s', float('nan')):.1f} img/s in training; "
              f"ratio probe / (c): {probe_s / seconds:.2f}")


if __name__ == "__main__":
    main()
