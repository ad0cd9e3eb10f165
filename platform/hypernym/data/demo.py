"""Demo data: a miniature ImageNet-21K in the winter21 layout, and scikit-learn's digits.

The miniature's classes are real ImageNet-21K synsets forming a WordNet subtree (toy dogs,
domestic cats, finches, cars). Images are drawn so that the tree shows: the top branch (animal or
vehicle) and the group decide the shape, the group the colour family, the leaf its own hue and
stripe direction; position, size, rotation, count and background vary, so a random-resized crop
still leaves the class visible. Nothing is downloaded.
"""

from __future__ import annotations

import colorsys
import io
import os
import re
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hypernym.errors import HypernymError

__all__ = ["DEMO_SYNSETS", "make_digits_folder", "make_winter21"]

# (group, leaves): group order fixes shape and colour family.
DEMO_GROUPS = {
    "toy dog n02085374": ["n02085620", "n02085782", "n02085936", "n02086240"],
    "domestic cat n02121808": ["n02123045", "n02123159", "n02123394", "n02124075"],
    "finch n01529672": ["n01530575", "n01531178", "n01532829", "n01534433"],
    "car n02958343": ["n02814533", "n03100240", "n03594945", "n04285008"],
}
DEMO_SYNSETS = [s for leaves in DEMO_GROUPS.values() for s in leaves]
_GROUP_HUE = [0.06, 0.14, 0.33, 0.60]  # dogs and cats (both carnivores) sit close together
_GROUP_SHAPE = ["ellipse", "triangle", "diamond", "rectangle"]


def make_winter21(out_dir: str | Path, *, images_per_class: int = 60,
                  image_size: tuple[int, int] = (400, 350), quality: int = 90, seed: int = 0,
                  classes: list[str] | None = None) -> list[str]:
    """Write ``<out_dir>/nXXXXXXXX.tar`` (members ``nXXXXXXXX_<i>.JPEG``) per synset.

    A tar that already holds ``images_per_class`` members is kept, so reruns are quick.
    Returns the synset ids written.
    """
    classes = DEMO_SYNSETS if classes is None else classes
    _check(classes, images_per_class)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for index, synset in enumerate(classes):
        target = out / f"{synset}.tar"
        if target.exists() and _member_count(target) == images_per_class:
            continue
        group, leaf = _position(synset, index)
        rng = np.random.default_rng([seed, index])
        tmp = out / f".{synset}.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            for i in range(1, images_per_class + 1):
                data = _jpeg(_draw(group, leaf, image_size, rng), quality)
                info = tarfile.TarInfo(f"{synset}_{i}.JPEG")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)  # never a half-written tar under the final name
    return list(classes)


def make_digits_folder(out_dir: str | Path, *, size: int = 32) -> list[str]:
    """scikit-learn's 1,797 bundled 8x8 digits as ``<out_dir>/<digit>/digit_<i>.png``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out_dir)
    names = [str(d) for d in range(10)]
    if all((out / n).is_dir() for n in names) and \
            sum(len(list((out / n).glob("*.png"))) for n in names) == len(digits.target):
        return names
    for n in names:
        (out / n).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = (image * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR)
        img.save(out / str(label) / f"digit_{i}.png")
    return names


def _check(classes: list[str], images_per_class: int) -> None:
    bad = [c for c in classes if not re.fullmatch(r"n\d{8}", c)]
    if bad or not classes:
        raise HypernymError(f"demo classes must be WordNet ids like n02085620, got "
                            f"{bad[:3] or classes}: pass classes=None for the 16 built-in synsets")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise HypernymError(f"demo classes {duplicates[:3]} are listed twice: each synset is one "
                            "tar, list it once")
    if images_per_class < 1:
        raise HypernymError(f"images_per_class is {images_per_class}: it must be at least 1")


def _position(synset: str, index: int) -> tuple[int, int]:
    for g, leaves in enumerate(DEMO_GROUPS.values()):
        if synset in leaves:
            return g, leaves.index(synset)
    return index % len(DEMO_GROUPS), index // len(DEMO_GROUPS)  # custom classes: spread out


def _colour(group: int, leaf: int, shade: float) -> tuple[int, int, int]:
    hue = (_GROUP_HUE[group % 4] + 0.035 * leaf) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, shade)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw(group: int, leaf: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    # background: a soft random gradient with noise (clutter without class information)
    base = rng.uniform(60, 200, 3)
    ramp = np.linspace(-30, 30, w)[None, :, None] * rng.uniform(-1, 1)
    background = base + ramp + rng.normal(0, 12, (h, w, 3))
    image = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(rng.integers(2, 5)):
        r = rng.uniform(0.12, 0.22) * min(w, h)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        _shape(draw, _GROUP_SHAPE[group % 4], cx, cy, r, rng.uniform(0, np.pi))
    # stripes: the leaf's own direction, drawn in a darker shade of the leaf's colour
    angle = np.pi * leaf / 4 + rng.normal(0, 0.08)
    yy, xx = np.mgrid[0:h, 0:w]
    period = min(w, h) / 9
    stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period) > 0
    fill = np.where(stripes[..., None], _colour(group, leaf, 0.95), _colour(group, leaf, 0.45))
    fill = Image.fromarray(fill.astype(np.uint8))
    image.paste(fill, (0, 0), mask)
    return image


def _shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float,
           turn: float) -> None:
    if kind == "ellipse":
        draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=255)
        return
    corners = {"triangle": 3, "diamond": 4, "rectangle": 4}[kind]
    offset = turn if kind != "rectangle" else np.pi / 4
    stretch = 1.0 if kind != "diamond" else 1.6
    points = [(cx + r * np.cos(offset + 2 * np.pi * k / corners),
               cy + stretch * r * np.sin(offset + 2 * np.pi * k / corners))
              for k in range(corners)]
    draw.polygon(points, fill=255)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _member_count(path: Path) -> int:
    try:
        with tarfile.open(path) as tar:
            return sum(1 for m in tar if m.isfile())
    except (tarfile.TarError, OSError):
        return -1
