"""Multi-label fine-tune on glyph scenes: the demo's backbone against random init, same budget.

    .venv/bin/python tests/benchmarks/multilabel.py [--workdir DIR] [--seeds 3]
                                                    [--stage pretrain|finetune|all]

Runs in ``--workdir`` as if it were the repository root: the hypernym home is its
``.hypernym``, where the shipped recipes' relative paths point.

(a) The demo's pretraining, as `hypernym demo` runs it: the miniature winter21 of glyphs
    (`make_winter21`, the demo's 20 classes and image count), the demo's prepare and pretrain
    recipes (`hypernym.demo.demo_recipes`: resnet10t, semantic softmax, 2 Ray Train workers),
    registered as ``hypernym-demo-backbone@candidate``. Kept when the workdir already holds it
    (``--stage finetune`` reuses it).
(b) Glyph scenes (`make_glyph_scenes`: 1 to 4 of the 16 leaf glyphs per canvas, boxes), prepared
    by `pipelines/prepare/scenes.yaml`, then per seed two multi-label fine-tunes of
    `pipelines/finetune/scenes.yaml`
    (task multilabel, BCE) at the same budget: from the backbone, and from timm's random init
    (the seed is ``data.seed``: the head's and random init's draws, crops, order). They train
    in this process (`run_training(in_process=True)`, one worker using both cores).

Prints each run's val/map (macro over classes), the means, the lead of the backbone in mAP
points and the ratio of the means, and each stage's seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The scenes of docs/multilabel.md: 1 to 3 glyphs per canvas, each 35-60% of its side (the
# demo's pretraining images show one glyph at 45-90% of theirs).
SCENES = {"images": {"train": 400, "val": 120}, "canvas": (96, 96), "objects": (1, 3),
          "object_size": (0.35, 0.6)}


def pretrain(home: Path) -> str:
    """The demo's backbone in the hypernym ``home`` (made once): its registry reference."""
    from hypernym.config import parse_recipe
    from hypernym.data.demo import DEMO_CLASSES, make_winter21
    from hypernym.demo import DemoConfig, demo_recipes
    from hypernym.errors import HypernymError
    from hypernym.recipes import run_recipe
    from hypernym.registry.models import resolve

    cfg = DemoConfig()
    ref = f"{cfg.backbone_name}@candidate"
    try:
        resolve(ref)
        print(f"(a) reusing {ref} in {home}")
        return ref
    except HypernymError:
        pass
    recipes = demo_recipes(cfg, home / "demo")  # where `hypernym demo` works
    side = int(cfg.img_size * 1.25)  # as run_demo generates it
    started = time.perf_counter()
    make_winter21(home / "demo" / "raw" / "winter21", images_per_class=cfg.images_per_class,
                  image_size=(side, side), classes=DEMO_CLASSES)
    for name in ("prepare-mini21k", "pretrain"):
        result = run_recipe(parse_recipe(recipes[name]), show_progress=False)
    print(f"(a) demo pretraining: val/top1 {result.metrics.get('val/top1', 0):.4f}, "
          f"{time.perf_counter() - started:.0f} s")
    return ref


def scenes() -> Path:
    """The scenes, made and prepared where the shipped recipes read them."""
    from hypernym.config import load_recipe
    from hypernym.data.prepare import prepare
    from hypernym.data.scenes import make_glyph_scenes

    recipe = load_recipe(REPO / "pipelines" / "prepare" / "scenes.yaml")
    out = Path(recipe.output)
    if not (out / "manifest.json").exists():
        make_glyph_scenes(recipe.source, **SCENES)
        prepare(recipe, show_progress=False)
    return out


def finetune(dataset: Path, backbone: str | None, seed: int) -> tuple[float, float]:
    """(val/map, seconds) of one fine-tune of the shipped multi-label recipe."""
    from hypernym.config import parse_recipe
    from hypernym.train.driver import run_training

    raw = yaml.safe_load((REPO / "pipelines" / "finetune" / "scenes.yaml").read_text())
    raw.update(backbone=backbone, name=f"bench-scenes-{'bb' if backbone else 'rand'}-{seed}",
               registry={"name": None})
    raw["data"] = {**raw["data"], "path": str(dataset), "seed": seed}
    raw["train"] = {**raw.get("train", {}), "system_metrics_s": None}
    started = time.perf_counter()
    result = run_training(parse_recipe(raw), show_progress=False, in_process=True)
    return result.metrics["val/map"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hypernym-bench-multilabel"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stage", choices=("pretrain", "finetune", "all"), default="all")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    os.environ["HYPERNYM_HOME"] = str(args.workdir / ".hypernym")
    from hypernym.runtime import configure_logging

    configure_logging()
    ref = pretrain(args.workdir / ".hypernym")
    if args.stage == "pretrain":
        return
    dataset = scenes()
    runs: dict[str, list[float]] = {"backbone": [], "random init": []}
    for seed in range(args.seeds):
        for name, start in (("backbone", ref), ("random init", None)):
            value, seconds = finetune(dataset, start, seed)
            runs[name].append(value)
            print(f"(b) seed {seed} {name:>11}: val/map {value:.4f} ({seconds:.0f} s)",
                  flush=True)
    means = {name: statistics.fmean(values) for name, values in runs.items()}
    for name, values in runs.items():
        print(f"{name:>11}: mean val/map {means[name]:.4f} over seeds "
              + ", ".join(f"{v:.4f}" for v in values))
    leads = [b - r for b, r in zip(runs["backbone"], runs["random init"], strict=True)]
    print(f"lead of the backbone: {100 * (means['backbone'] - means['random init']):+.1f} mAP "
          f"points (per seed {', '.join(f'{100 * v:+.1f}' for v in leads)}); ratio "
          f"{means['backbone'] / max(means['random init'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
