"""Generated multi-label data with boxes: scenes of several of the demo's glyphs on one canvas.

Each scene draws a few glyphs of the demo's classes (data/demo.py: the same glyphs, the same
strokes and jitter) at their own sizes and places, and records each glyph's box: the extent of
its visible strokes. It is written in the COCO layout (``annotations/instances_<split>.json``
beside ``<split>/``), which `hypernym prepare` reads like any COCO dataset, for multi-label
fine-tuning and for detection alike. COCO rather than VOC: one JSON file per split instead of an
XML per image (faster to write and read), boxes in the continuous pixel coordinates the shards
use (VOC's are 1-based integers), and the category list fixes the class order.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from hypernym.data.demo import DEMO_SYNSETS, class_glyphs, glyph_shape, named_rng
from hypernym.errors import HypernymError

__all__ = ["make_glyph_scenes", "render_scene"]

_VISIBLE = 64  # a stroke pixel counts for the box from this alpha (of 255) on


def render_scene(glyphs: dict[str, np.ndarray], size: tuple[int, int],
                 rng: np.random.Generator, *, objects: tuple[int, int] = (1, 4),
                 object_size: tuple[float, float] = (0.25, 0.5), max_overlap: float = 0.3,
                 ) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """One scene at ``size`` (width, height) and its boxes [(class, (x0, y0, x1, y1))].

    Draws between ``objects[0]`` and ``objects[1]`` glyphs of classes drawn uniformly from
    ``glyphs`` (a class may come twice), each on a square of ``object_size`` times the canvas's
    shorter side, placed where its box overlaps no earlier box by more than ``max_overlap``
    (IoU); a glyph that finds no such place in 20 tries is left out.
    """
    w, h = size
    classes = sorted(glyphs)
    alpha = np.zeros((h, w), np.uint8)
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        label = classes[int(rng.integers(len(classes)))]
        side = min(max(int(rng.uniform(*object_size) * min(w, h)), 8), w, h)
        mask = np.asarray(glyph_shape(glyphs[label], rng).resize((side, side), Image.BILINEAR))
        ys, xs = np.nonzero(mask >= _VISIBLE)
        if not len(xs):
            continue
        tight = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        for _try in range(20):
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            box = (x + tight[0], y + tight[1], x + tight[2], y + tight[3])
            if all(_iou(box, other) <= max_overlap for _, other in boxes):
                np.maximum(alpha[y : y + side, x : x + side], mask,
                           out=alpha[y : y + side, x : x + side])
                boxes.append((label, box))
                break
    ground, ink = rng.uniform(0, 40), rng.uniform(170, 255)
    pixels = ground + (ink - ground) * (alpha.astype(np.float32) / 255.0)
    pixels += rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(0, 6))
    rgb = pixels[..., None] + rng.normal(0, 4, 3).astype(np.float32)  # a faint tint
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8)), boxes


def make_glyph_scenes(out_dir: str | Path, *, images: dict[str, int] | None = None,
                      canvas: tuple[int, int] = (160, 160), objects: tuple[int, int] = (1, 4),
                      object_size: tuple[float, float] = (0.25, 0.5),
                      max_overlap: float = 0.3, classes: list[str] | None = None,
                      glyph_tree: list[str] | None = None, seed: int = 0,
                      quality: int = 90) -> Path:
    """Write a COCO-layout dataset of glyph scenes to ``out_dir`` and return it.

    Args:
        out_dir: created if missing; holds ``annotations/instances_<split>.json`` and
            ``<split>/<split>_<i>.jpg``.
        images: scenes per split (``{"train": 200, "val": 50}`` by default).
        canvas: (width, height) of every scene.
        objects: the fewest and most glyphs per scene.
        object_size: each glyph's square as a fraction of the canvas's shorter side.
        max_overlap: the most IoU a glyph's box may have with an earlier one.
        classes: synset ids; the demo's 16 leaves (``DEMO_SYNSETS``) by default. They are the
            COCO categories (ids 1..n), so a prepared dataset's classes are these synsets.
        glyph_tree: the classes whose WordNet tree shapes the glyphs (`class_glyphs`: a class's
            strokes depend on every class beside it), ``classes`` by default. The demo pretrains
            on ``DEMO_CLASSES``, the 16 leaves and their 4 groups: pass it to draw the leaves
            as the demo's backbone saw them.
        seed: with the arguments, decides every byte; a folder already holding this exact
            dataset is kept as it is.
        quality: JPEG quality.
    """
    images = {"train": 200, "val": 50} if images is None else dict(images)
    classes = list(DEMO_SYNSETS if classes is None else classes)
    _check(images, canvas, objects, object_size, max_overlap, classes)
    tree = classes if glyph_tree is None else list(glyph_tree)
    if not set(classes) <= set(tree):
        missing = sorted(set(classes) - set(tree))
        raise HypernymError(f"glyph_tree lacks the classes {missing[:3]}: it must hold every "
                            "class the scenes draw (and may hold more)")
    out = Path(out_dir)
    params = {"generator": "hypernym glyph scenes", "images": images, "canvas": list(canvas),
              "objects": list(objects), "object_size": list(object_size),
              "max_overlap": max_overlap, "classes": classes, "seed": seed, "quality": quality}
    if glyph_tree is not None:
        params["glyph_tree"] = tree
    if _same(out, params):
        return out
    shaped = class_glyphs(tree, seed=seed)
    glyphs = {c: shaped[c] for c in classes}  # drawn: the classes, not the rest of the tree
    categories = [{"id": i + 1, "name": c, "supercategory": "glyph"}
                  for i, c in enumerate(classes)]
    for split, count in images.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        rng = named_rng(seed, f"scenes/{split}")
        entries, annotations = [], []
        for i in range(count):
            image, boxes = render_scene(glyphs, canvas, rng, objects=objects,
                                        object_size=object_size, max_overlap=max_overlap)
            name = f"{split}_{i:06d}.jpg"
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
            (out / split / name).write_bytes(buffer.getvalue())
            entries.append({"id": i, "file_name": name, "width": canvas[0], "height": canvas[1]})
            for label, (x0, y0, x1, y1) in boxes:
                annotations.append({"id": len(annotations), "image_id": i,
                                    "category_id": classes.index(label) + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        target = out / "annotations" / f"instances_{split}.json"
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps({"info": params, "images": entries,
                                   "annotations": annotations, "categories": categories}))
        os.replace(tmp, target)  # last: a split's JSON names only images already written
    return out


def _same(out: Path, params: dict) -> bool:
    """Whether ``out`` already holds every split of this exact dataset."""
    for split in params["images"]:
        try:
            data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        except (OSError, ValueError):
            return False
        if data.get("info") != params or not all((out / split / e["file_name"]).is_file()
                                                 for e in data["images"]):
            return False
    return True


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _check(images, canvas, objects, object_size, max_overlap, classes) -> None:
    if not images or any(not isinstance(n, int) or n < 1 for n in images.values()):
        raise HypernymError(f"images is {images}: give scenes per split, e.g. "
                            "{'train': 200, 'val': 50}, each at least 1")
    if len(canvas) != 2 or min(canvas) < 16:
        raise HypernymError(f"canvas is {canvas}: give (width, height), each at least 16")
    if not 0 <= objects[0] <= objects[1] or objects[1] < 1:
        raise HypernymError(f"objects is {objects}: give (fewest, most) glyphs per scene, "
                            "0 <= fewest <= most, most at least 1")
    if not 0 < object_size[0] <= object_size[1] <= 1:
        raise HypernymError(f"object_size is {object_size}: give (smallest, largest) as "
                            "fractions of the canvas's shorter side, 0 < smallest <= largest <= 1")
    if not 0 <= max_overlap <= 1:
        raise HypernymError(f"max_overlap is {max_overlap}: an IoU from 0 to 1")
    if not classes or len(set(classes)) != len(classes):
        raise HypernymError(f"classes {classes[:5]}: give distinct class ids (demo synsets)")
