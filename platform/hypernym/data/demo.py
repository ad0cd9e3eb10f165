"""Demo data: a miniature ImageNet-21K in the winter21 layout, and scikit-learn's digits.

The miniature's classes are real ImageNet-21K synsets, and their pictures follow the WordNet
tree, so that related synsets look related (``class_styles``): below the classes' common ancestor,
the top branch (living thing or artifact, for the default classes) picks the shape family, the group
(toy dog, domestic cat, finch, car) the shape variant and the colour, with hues further apart the
further apart the groups are in the tree (dogs and cats, both carnivores, are neighbours), and the
leaf the direction of its stripes. Stripe directions lie in 0-90 degrees, so a horizontal flip
never turns one class's stripes into another's. Position, size, rotation and count of the objects,
a tinted background with noise and grey clutter vary per image, so a random-resized crop still
shows the class. Nothing is downloaded. The default 16 classes x 60 images of 400x350 take about
6 s on one core; a small CNN (resnet10t, 64 px random-resized crops with flips) tells the 16
classes apart on held-out images after about 5 CPU epochs.
"""

from __future__ import annotations

import colorsys
import io
import os
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hypernym.errors import HypernymError

__all__ = ["DEMO_GROUPS", "DEMO_SYNSETS", "ClassStyle", "class_styles", "make_digits_folder",
           "make_winter21"]

# WordNet group -> four of its ImageNet-21K (and 1K) leaves; a test checks every relation.
DEMO_GROUPS = {
    "toy dog n02085374": ["n02085620", "n02085782", "n02085936", "n02086240"],
    "domestic cat n02121808": ["n02123045", "n02123159", "n02123394", "n02124075"],
    "finch n01529672": ["n01530575", "n01531178", "n01532829", "n01534433"],
    "car n02958343": ["n02814533", "n03100240", "n03594945", "n04285008"],
}
DEMO_SYNSETS = [s for leaves in DEMO_GROUPS.values() for s in leaves]


@dataclass(frozen=True)
class ClassStyle:
    """How the demo draws one class."""

    family: int  # shape family: round, angular, star, spiky (cycled), from the top branch
    variant: int  # shape variant within the family, from the group
    hue: float  # 0..1, from the group (plus a small shift per leaf)
    angle: float  # stripe direction in degrees, 0..90, from the leaf's place in its group


def make_winter21(out_dir: str | Path, *, images_per_class: int = 60,
                  image_size: tuple[int, int] = (400, 350), quality: int = 90, seed: int = 0,
                  classes: list[str] | None = None) -> list[str]:
    """Write ``<out_dir>/nXXXXXXXX.tar`` per synset, holding ``nXXXXXXXX_<i>.JPEG`` (i from 1).

    Args:
        out_dir: created if missing.
        images_per_class: JPEGs per tar.
        image_size: (width, height) of every image.
        quality: JPEG quality.
        seed: with the class id, decides every image: the same arguments give the same bytes.
        classes: synset ids; the 16 of ``DEMO_SYNSETS`` by default.

    Returns:
        The synset ids written. A tar already holding the same images is kept (reruns are quick);
        each tar is written under a temporary name and then renamed.
    """
    classes = list(DEMO_SYNSETS if classes is None else classes)
    _check(classes, images_per_class, image_size, quality)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    styles = class_styles(classes)
    for synset in classes:
        images = _images(synset, styles[synset], images_per_class, image_size, quality, seed)
        target = out / f"{synset}.tar"
        if _same_tar(target, images_per_class, next(_images(
                synset, styles[synset], 1, image_size, quality, seed))):
            continue
        tmp = out / f".{synset}.tar.tmp"
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in images:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)  # never a half-written tar under the final name
    return classes


def class_styles(classes: list[str]) -> dict[str, ClassStyle]:
    """Each class's look, derived from where the classes sit in the WordNet tree.

    Classes that are not all known synsets are treated as a flat tree (each its own branch).
    """
    from hypernym.taxonomy.hierarchy import class_hierarchy

    paths = class_hierarchy(classes)["class_paths"]
    order = sorted(classes, key=lambda c: paths[c])  # a depth-first order of the tree
    top = _common_prefix([paths[c] for c in classes])  # length of the common ancestor's path
    uses = Counter(node for c in classes for node in set(paths[c]))
    branch, group = {}, {}
    for c in classes:
        path = paths[c]
        branch[c] = path[min(top, len(path) - 1)]
        shared = [i for i in range(top, len(path) - 1) if uses[path[i]] > 1]
        group[c] = tuple(path[: (shared[-1] if shared else min(top, len(path) - 1)) + 1])
    branches = list(dict.fromkeys(branch[c] for c in order))
    groups = list(dict.fromkeys(group[c] for c in order))
    variants: dict[str, list[tuple]] = {}  # branch -> its groups, in order
    for c in order:
        if group[c] not in variants.setdefault(branch[c], []):
            variants[branch[c]].append(group[c])
    # hue position: walk the groups depth-first, stepping by their distance in the tree
    position, steps = {groups[0]: 0}, 0
    for a, b in zip(groups, groups[1:], strict=False):
        steps += len(a) + len(b) - 2 * _common_prefix([list(a), list(b)])
        position[b] = steps
    styles = {}
    for c in classes:
        members = [m for m in order if group[m] == group[c]]
        leaf, n = members.index(c), len(members)
        shift = 0.03 * (leaf / (n - 1) - 0.5) if n > 1 else 0.0
        styles[c] = ClassStyle(
            family=branches.index(branch[c]) % len(_FAMILIES),
            variant=variants[branch[c]].index(group[c]),
            hue=(0.05 + 0.75 * position[group[c]] / max(steps, 1) + shift) % 1.0,
            angle=90.0 * leaf / (n - 1) if n > 1 else 0.0,
        )
    return styles


def make_digits_folder(out_dir: str | Path, *, size: int = 32) -> list[str]:
    """scikit-learn's 1,797 bundled 8x8 digits as ``<out_dir>/<digit>/digit_<i>.png``.

    Pixels 0-16 become 0-255 greyscale, upscaled to ``size`` x ``size`` (bilinear). A folder
    that already holds all of them at this size is kept. Returns the class names "0".."9".
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out_dir)
    names = [str(d) for d in range(10)]
    files = sorted(out.glob("[0-9]/digit_*.png"))
    if len(files) == len(digits.target) and Image.open(files[0]).size == (size, size):
        return names
    for n in names:
        (out / n).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = (image * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
        target = out / str(label) / f"digit_{i}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(tmp, format="PNG")
        os.replace(tmp, target)
    return names


def _check(classes: list[str], images_per_class: int, image_size: tuple[int, int],
           quality: int) -> None:
    bad = [c for c in classes if not (isinstance(c, str) and re.fullmatch(r"n\d{8}", c))]
    if bad or not classes:
        raise HypernymError(f"demo classes must be WordNet ids like n02085620, got "
                            f"{bad[:3] or classes}: pass classes=None for the 16 built-in synsets")
    duplicates = sorted(c for c, n in Counter(classes).items() if n > 1)
    if duplicates:
        raise HypernymError(f"demo classes {duplicates[:3]} are listed twice: each synset is one "
                            "tar, list it once")
    if images_per_class < 1:
        raise HypernymError(f"images_per_class is {images_per_class}: it must be at least 1")
    if len(image_size) != 2 or min(image_size) < 16:
        raise HypernymError(f"image_size is {image_size}: give (width, height), each at least 16")
    if not 1 <= quality <= 100:
        raise HypernymError(f"quality is {quality}: JPEG quality runs from 1 to 100")


def _common_prefix(paths: list[list[str]]) -> int:
    n = 0
    for nodes in zip(*paths, strict=False):
        if len(set(nodes)) > 1:
            break
        n += 1
    return n


def _images(synset: str, style: ClassStyle, count: int, size: tuple[int, int], quality: int,
            seed: int):
    rng = np.random.default_rng([seed, int(synset[1:])])  # not the class's place in the list
    for i in range(1, count + 1):
        buffer = io.BytesIO()
        _draw(style, size, rng).save(buffer, format="JPEG", quality=quality)
        yield f"{synset}_{i}.JPEG", buffer.getvalue()


def _same_tar(path: Path, count: int, first: tuple[str, bytes]) -> bool:
    """Whether ``path`` holds ``count`` images and begins with exactly ``first``."""
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar if m.isfile()]
            if len(members) != count or members[0].name != first[0]:
                return False
            return tar.extractfile(members[0]).read() == first[1]
    except (tarfile.TarError, OSError):
        return False


def _colour(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw(style: ClassStyle, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    # background: a greyish tinted gradient (2x2 corners, upscaled), noise and grey clutter;
    # it carries no class information
    corners = rng.uniform(70, 180) + rng.uniform(-20, 20, 3) + rng.uniform(-30, 30, (2, 2, 3))
    image = Image.fromarray(corners.clip(0, 225).astype(np.uint8)).resize(size, Image.BILINEAR)
    noisy = np.asarray(image) + rng.integers(0, 24, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(noisy)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        grey = int(rng.uniform(40, 220))
        r = rng.uniform(0.05, 0.15) * min(w, h)
        points = _outline(int(rng.integers(len(_FAMILIES))), int(rng.integers(4)),
                          rng.uniform(0, w), rng.uniform(0, h), r, rng.uniform(0, 2 * np.pi))
        draw.polygon(points, fill=(grey, grey, grey))
    # the class: 2-4 objects of its shape, filled with stripes of its colour and direction
    mask = Image.new("L", size, 0)
    shapes = ImageDraw.Draw(mask)
    for _ in range(rng.integers(2, 5)):
        r = rng.uniform(0.12, 0.22) * min(w, h)
        shapes.polygon(_outline(style.family, style.variant, rng.uniform(r, w - r),
                                rng.uniform(r, h - r), r, rng.uniform(0, 2 * np.pi)), fill=255)
    theta = np.deg2rad(style.angle + rng.normal(0, 2.5))
    period = min(w, h) * rng.uniform(0.09, 0.12)
    xs = np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(theta) / period)
    ys = np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(theta) / period)
    stripes = ((xs + ys + np.float32(rng.uniform())) % 1.0 < 0.5).astype(np.uint8) * 255
    hue = style.hue + rng.normal(0, 0.005)
    fill = Image.new("RGB", size, _colour(hue, 0.8, rng.uniform(0.35, 0.5)))
    fill.paste(_colour(hue, 0.75, rng.uniform(0.85, 1.0)), (0, 0, w, h), Image.fromarray(stripes))
    image.paste(fill, (0, 0), mask)
    return image


_FAMILIES = ("round", "angular", "star", "spiky")


def _outline(family: int, variant: int, cx: float, cy: float, r: float,
             turn: float) -> list[tuple[float, float]]:
    """Polygon points of a shape of ``family`` / ``variant``, radius ``r``, rotated by ``turn``."""
    v = variant % 4
    kind = _FAMILIES[family % len(_FAMILIES)]
    if kind == "round":  # ellipses of aspect 0.6, 0.35, 1, 0.8
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        x, y = r * np.cos(t), (0.6, 0.35, 1.0, 0.8)[v] * r * np.sin(t)
    elif kind == "angular":  # squares, triangles, pentagons, hexagons
        t = np.linspace(0, 2 * np.pi, (4, 3, 5, 6)[v], endpoint=False)
        x, y = r * np.cos(t), r * np.sin(t)
    else:  # stars of 5, 4, 6, 7 points; spiky shapes of 4, 3, 5, 6 thin arms
        points = ((5, 4, 6, 7) if kind == "star" else (4, 3, 5, 6))[v]
        t = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
        radius = np.where(np.arange(2 * points) % 2 == 0, r, (0.45 if kind == "star" else 0.2) * r)
        x, y = radius * np.cos(t), radius * np.sin(t)
    c, s = np.cos(turn), np.sin(turn)
    return [(float(cx + c * a - s * b), float(cy + s * a + c * b))
            for a, b in zip(x, y, strict=True)]
