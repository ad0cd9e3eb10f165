"""Detection on the generated glyph scenes: the data, a glyph backbone pretrained in process the
demo's way, and the fine-tune recipes, shared by the detection tests and the transfer benchmark
(tests/benchmarks/detection.py).

The backbone is the demo's (`hypernym.demo.demo_recipes`: its glyph data, its preparation, its
pretraining recipe with the semantic softmax over the 16 leaves and their 4 groups), at a
budget the caller picks. The scenes draw the same 16 leaves as the demo draws them
(`make_glyph_scenes(glyph_tree=DEMO_CLASSES)`: a glyph's strokes depend on the whole class tree,
and the demo's tree holds the groups too), so a detector fine-tuned from the backbone starts
from features of exactly the shapes it has to find.
"""

from __future__ import annotations

from pathlib import Path

from hypernym.config import parse_recipe

# The budget the tests run at, measured in docs/benchmarks.md ("Detection").
PRETRAIN = {"images_per_class": 60, "epochs": 3, "img_size": 48}
SCENES = {"images": {"train": 96, "val": 32}, "canvas": (96, 96)}
FINETUNE = {"epochs": 3, "img_size": 96, "batch_size": 8, "fpn_channels": 32}
# The demo's own pretraining budget (hypernym.demo.DemoConfig's defaults).
DEMO_PRETRAIN = {"images_per_class": 200, "epochs": 4, "img_size": 48}


def _demo(root: Path, *, images_per_class: int, img_size: int, epochs: int = 1) -> dict:
    from hypernym.demo import DemoConfig, demo_recipes

    config = DemoConfig(images_per_class=images_per_class, img_size=img_size,
                        pretrain_epochs=epochs, workers=1)
    return demo_recipes(config, root)


def prepare_glyphs(root: Path, *, images_per_class: int, img_size: int) -> Path:
    """The demo's pretraining data at ``images_per_class``: glyphs of its 20 classes (the 16
    leaves and their groups), generated and prepared as `hypernym demo` does."""
    from hypernym.data.demo import DEMO_CLASSES, make_winter21
    from hypernym.data.prepare import prepare

    side = int(img_size * 1.25)  # the demo's: what prepare keeps (1.15x) leaves crops room
    make_winter21(root / "raw" / "winter21", images_per_class=images_per_class,
                  image_size=(side, side), classes=DEMO_CLASSES)
    recipe = _demo(root, images_per_class=images_per_class, img_size=img_size)
    prepare(parse_recipe(recipe["prepare-mini21k"]), show_progress=False)
    return root / "data" / "mini21k"


def prepare_scenes(root: Path, *, images: dict[str, int], canvas: tuple[int, int],
                   name: str = "scenes", seed: int = 0, image_size: int | None = None) -> Path:
    """Glyph scenes of the demo's 16 leaves as the demo draws them (COCO layout), prepared at
    ``image_size`` (default: their own size)."""
    from hypernym.data.demo import DEMO_CLASSES
    from hypernym.data.prepare import prepare
    from hypernym.data.scenes import make_glyph_scenes

    make_glyph_scenes(root / f"raw-{name}", images=images, canvas=canvas, seed=seed,
                      glyph_tree=DEMO_CLASSES)
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / f"raw-{name}"), "output": str(root / name),
        "image_size": image_size or max(canvas), "min_per_class": 0, "overwrite": True,
    }), show_progress=False)
    return root / name


def pretrain_recipe(glyphs: Path, *, epochs: int, img_size: int, name: str = "glyph-backbone"):
    """The demo's pretraining recipe (`hypernym.demo.demo_recipes`) on ``glyphs`` for
    ``epochs``, in one process, registered as ``name``."""
    raw = _demo(glyphs.parent.parent, images_per_class=10, img_size=img_size,
                epochs=epochs)["pretrain"]
    raw["data"]["path"] = str(glyphs)
    raw["train"]["system_metrics_s"] = None
    return parse_recipe({**raw, "experiment": "detection", "name": "glyph-pretrain",
                         "registry": {"name": name, "alias": "candidate"}})


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
