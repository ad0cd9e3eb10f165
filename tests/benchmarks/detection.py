"""Detection transfer: FCOS fine-tuned on glyph scenes from a glyph backbone vs random init.

    .venv/bin/python tests/benchmarks/detection.py [--seeds 3] [--pretrain demo|test]
        [--scenes 96 --val 32 --canvas 96 --img-size 96] [--epochs 3]
        [--backbone REF --home DIR] [--set detection.backbone_lr_scale=1]

Generates the glyph scenes (COCO layout, `hypernym.data.scenes`, the demo's 16 leaves drawn as
the demo draws them) and the demo's glyphs, prepares both (Ray tasks), pretrains the demo's
resnet10t backbone with the demo's recipe in this process and registers it (``--pretrain
demo``: the demo's budget, 200 images per class, 4 epochs; ``test``: the test suite's smaller
one, tests/detection.py), then, per seed, fine-tunes the same FCOS recipe from the backbone
and from random init (one process, `run_training(in_process=True)`, its own MLflow home) and
prints each run's val mAP@.5 and mAP@[.5:.95], the pretrained start's lead and the ratio of
the two means, and the wall time of each stage. The baseline is the random init at the same
budget, in the same run.
``--backbone REF --home DIR`` starts from a backbone already registered in that hypernym home
instead (the demo's: ``hypernym demo`` with ``HYPERNYM_HOME=DIR`` registers
``hypernym-demo-backbone@candidate``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.* helpers

from hypernym.config import apply_overrides  # noqa: E402
from tests.detection import (  # noqa: E402
    DEMO_PRETRAIN,
    FINETUNE,
    PRETRAIN,
    SCENES,
    detection_recipe,
    prepare_glyphs,
    prepare_scenes,
    pretrain_recipe,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain", choices=("test", "demo"), default="demo")
    parser.add_argument("--scenes", type=int, default=SCENES["images"]["train"])
    parser.add_argument("--val", type=int, default=SCENES["images"]["val"])
    parser.add_argument("--canvas", type=int, default=SCENES["canvas"][0])
    parser.add_argument("--img-size", type=int, default=None,
                        help="prepared and trained size (default: the canvas)")
    parser.add_argument("--epochs", type=int, default=FINETUNE["epochs"])
    parser.add_argument("--backbone", default=None, help="a registered backbone to start from")
    parser.add_argument("--home", default=None, help="the hypernym home that registers it")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a key of the fine-tune recipe (both starts)")
    args = parser.parse_args()

    import os

    import ray

    root = Path(tempfile.mkdtemp(prefix="hypernym-bench-detection-"))
    os.environ["HYPERNYM_HOME"] = args.home or str(root / "home")
    from hypernym.runtime import configure_logging
    from hypernym.settings import get_settings
    from hypernym.train import run_training

    configure_logging(verbose=False)
    settings = get_settings()
    times = {}
    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    pre = dict(PRETRAIN if args.pretrain == "test" else DEMO_PRETRAIN)
    if args.backbone is None:
        glyphs = prepare_glyphs(root, images_per_class=pre["images_per_class"],
                                img_size=pre["img_size"])
    canvas, size = (args.canvas, args.canvas), args.img_size or args.canvas
    scenes = prepare_scenes(root, images={"train": args.scenes, "val": args.val}, canvas=canvas,
                            image_size=size)
    ray.shutdown()
    times["prepare"] = time.perf_counter() - started
    t0 = time.perf_counter()
    reference = args.backbone
    if reference is None:
        backbone = run_training(pretrain_recipe(glyphs, epochs=pre["epochs"],
                                                img_size=pre["img_size"]),
                                in_process=True, settings=settings, show_progress=False)
        reference = "glyph-backbone@candidate"
        print(f"backbone: {pre} val/top1 {backbone.metrics.get('val/top1', float('nan')):.3f}"
              f" (registered as {reference} in the hypernym home {os.environ['HYPERNYM_HOME']})")
    times["pretrain"] = time.perf_counter() - t0
    budget = {**FINETUNE, "epochs": args.epochs, "img_size": size}
    rows = []
    for seed in range(args.seeds):
        row = {"seed": seed}
        for start, ref in (("pretrained", reference), ("random", None)):
            recipe = detection_recipe(scenes, backbone=ref, seed=seed, name=f"{start}-{seed}",
                                      **budget)
            if args.overrides:
                from hypernym.config import parse_recipe

                recipe = parse_recipe(apply_overrides(recipe.model_dump(mode="json"),
                                                      args.overrides))
            t0 = time.perf_counter()
            result = run_training(recipe, in_process=True, settings=settings,
                                  show_progress=False)
            row[start] = (result.metrics["val/map_50"], result.metrics["val/map"],
                          time.perf_counter() - t0)
        rows.append(row)
        print(f"seed {seed}: " + ", ".join(
            f"{s} mAP@.5 {row[s][0]:.3f} mAP {row[s][1]:.3f} ({row[s][2]:.0f} s)"
            for s in ("pretrained", "random"))
            + f"; lead {row['pretrained'][0] - row['random'][0]:+.3f}")
    leads = [r["pretrained"][0] - r["random"][0] for r in rows]
    for start in ("pretrained", "random"):
        print(f"{start:>10}: mAP@.5 mean {statistics.mean(r[start][0] for r in rows):.3f}, "
              f"mAP mean {statistics.mean(r[start][1] for r in rows):.3f}, fine-tune "
              f"{statistics.mean(r[start][2] for r in rows):.0f} s each")
    steps = budget["epochs"] * (args.scenes // budget["batch_size"])
    means = {s: statistics.mean(r[s][0] for r in rows) for s in ("pretrained", "random")}
    ratio = means["pretrained"] / means["random"] if means["random"] else float("inf")
    print(f"ratio of mean mAP@.5, pretrained / random: {ratio:.2f}x")
    print(f"lead in mAP@.5: mean {statistics.mean(leads):+.3f}, per seed "
          + ", ".join(f"{v:+.3f}" for v in leads) + f"; weakest {min(leads):+.3f}")
    print(f"budget: {args.scenes} train scenes x {budget['epochs']} epochs = {steps} steps of "
          f"{budget['batch_size']} at {size} px, {args.val} val scenes; prepare "
          f"{times['prepare']:.0f} s, pretrain {times['pretrain']:.0f} s, total "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
