"""Detection on the generated glyph scenes: the data, a small glyph backbone pretrained in
process, and the fine-tune recipes, shared by the detection tests and the transfer benchmark
(tests/benchmarks/detection.py).

The scenes draw the glyphs of the demo's classes (`hypernym.data.scenes`); the backbone is
pretrained on single glyphs of the same classes (`hypernym.data.demo.make_winter21`, same seed:
the same glyph shapes), the demo's way at a smaller budget. A detector fine-tuned from it
should find the glyphs in scenes sooner than one from random init.
"""

from __future__ import annotations

from pathlib import Path

from hypernym.config import parse_recipe

# The budget the tests run at, measured in docs/benchmarks.md ("Detection").
PRETRAIN = {"images_per_class": 60, "epochs": 3, "img_size": 48}
SCENES = {"images": {"train": 96, "val": 32}, "canvas": (96, 96)}
FINETUNE = {"epochs": 3, "img_size": 96, "batch_size": 8, "fpn_channels": 32}


def prepare_glyphs(root: Path, *, images_per_class: int, img_size: int) -> Path:
    """Single glyphs of the demo's 16 leaf classes, prepared as the demo prepares its
    pretraining data (stored 1.15x the training size, the shorter side)."""
    from hypernym.data.demo import DEMO_SYNSETS, make_winter21
    from hypernym.data.prepare import prepare

    side = int(img_size * 1.25)
    make_winter21(root / "raw-glyphs", images_per_class=images_per_class,
                  image_size=(side, side), classes=DEMO_SYNSETS)
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw-glyphs"), "output": str(root / "glyphs"),
        "source_format": "winter21", "val_per_class": 5, "min_per_class": 0,
        "image_size": int(img_size * 1.15), "resize": "shorter", "overwrite": True,
    }), show_progress=False)
    return root / "glyphs"


def prepare_scenes(root: Path, *, images: dict[str, int], canvas: tuple[int, int],
                   name: str = "scenes", seed: int = 0, image_size: int | None = None) -> Path:
    """Glyph scenes (COCO layout) prepared at ``image_size`` (default: their own size)."""
    from hypernym.data.prepare import prepare
    from hypernym.data.scenes import make_glyph_scenes

    make_glyph_scenes(root / f"raw-{name}", images=images, canvas=canvas, seed=seed)
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / f"raw-{name}"), "output": str(root / name),
        "image_size": image_size or max(canvas), "min_per_class": 0, "overwrite": True,
    }), show_progress=False)
    return root / name


def pretrain_recipe(glyphs: Path, *, epochs: int, img_size: int, name: str = "glyph-backbone"):
    """The demo's pretraining recipe (hypernym/demo/__init__.py) on the glyphs, in one
    process, registered as ``name``."""
    return parse_recipe({
        "kind": "pretrain", "name": "glyph-pretrain", "experiment": "detection",
        "data": {"path": str(glyphs), "img_size": img_size, "batch_size": 32,
                 "crop_scale": [0.25, 1.0]},
        "model": {"arch": "resnet10t"},
        "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 1},
        "train": {"epochs": epochs, "label_smoothing": 0.1, "log_every": 5,
                  "system_metrics_s": None},
        "scaling": {"num_workers": 1},
        "registry": {"name": name, "alias": "candidate"},
    })


def detection_recipe(scenes: Path, *, backbone: str | None, seed: int = 0, epochs: int,
                     img_size: int, batch_size: int, fpn_channels: int,
                     name: str = "glyph-detector", register: str | None = None, **extra):
    """An FCOS fine-tune on the scenes from ``backbone`` (None: random init)."""
    raw = {
        "kind": "finetune", "name": name, "experiment": "detection", "task": "detection",
        "backbone": backbone,
        "data": {"path": str(scenes), "img_size": img_size, "batch_size": batch_size,
                 "seed": seed},
        "model": {"arch": "resnet10t"},
        "optim": {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 0},
        "train": {"epochs": epochs, "log_every": 5, "system_metrics_s": None},
        "scaling": {"num_workers": 1},
        "detection": {"fpn_channels": fpn_channels},
        "registry": {"name": register},
    }
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_recipe(raw)
