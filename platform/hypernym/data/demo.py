"""Demo data: a miniature ImageNet-21K of formula-driven images, and scikit-learn's digits.

The miniature keeps the winter21 layout (one ``nXXXXXXXX.tar`` of JPEGs per synset) and real
ImageNet-21K synsets forming a WordNet subtree, but its pictures are fractals, as in FractalDB
(Kataoka et al., "Pre-training without Natural Images", ACCV 2020): each class is one iterated
function system (IFS, a few contracting affine maps), and every image a render of its attractor by
the chaos game. A network that learns to tell such classes apart learns stroke, corner and
curvature detectors that carry over to handwritten and natural images; no natural image (and
nothing of any evaluation set) is involved.

The systems follow the WordNet tree (``class_systems``): the classes' common ancestor draws a
system, and every branching below it moves its parent's parameters by a seeded step that shrinks
with depth, so the leaves of one group (four toy dogs) are variations of one system, neighbouring
groups (dogs and cats, both carnivores) stay closer than far ones (finches, cars), and a group's
own class (``toy dog``, which 21K-P holds as a class too) renders the group's system itself. That
gives the semantic softmax a hierarchy that means something.

Each image varies its class's system (FractalDB's parameter jitter), then rasterises the attractor
on a coarse grid and upsamples it: thick, soft, bright strokes on a dark ground, at a random pose,
scale and position, with noise. The coarse rendering was measured to transfer better to the
demo's digits than thin point clouds (README, "The demo").
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from hypernym.errors import HypernymError

__all__ = ["DEMO_CLASSES", "DEMO_GROUPS", "DEMO_SYNSETS", "class_systems", "make_digits_folder",
           "make_winter21", "render"]

# WordNet group -> four of its ImageNet-21K (and 1K) leaves; a test checks every relation.
DEMO_GROUPS = {
    "toy dog n02085374": ["n02085620", "n02085782", "n02085936", "n02086240"],
    "domestic cat n02121808": ["n02123045", "n02123159", "n02123394", "n02124075"],
    "finch n01529672": ["n01530575", "n01531178", "n01532829", "n01534433"],
    "car n02958343": ["n02814533", "n03100240", "n03594945", "n04285008"],
}
DEMO_SYNSETS = [s for leaves in DEMO_GROUPS.values() for s in leaves]
# The demo's classes: the leaves and their groups, which 21K-P also holds as classes (toy dog
# above Chihuahua), so the semantic softmax has two levels.
DEMO_CLASSES = DEMO_SYNSETS + [group.rsplit(" ", 1)[1] for group in DEMO_GROUPS]

# How far a node's system moves from its parent's, by its depth below the common ancestor
# (parameters lie in [-1, 1]): branches differ a lot, the leaves of one group less.
STEPS = (0.5, 0.4, 0.3, 0.25)
MAX_GAIN = 0.85  # largest singular value of a map: every map contracts, the chaos game converges
GRID = (10, 16)  # the coarse raster's side, drawn per image: strokes 1/10 to 1/16 of the object
JITTER = 0.05  # per-image parameter noise (FractalDB's intra-class variation)


def make_winter21(out_dir: str | Path, *, images_per_class: int = 60,
                  image_size: tuple[int, int] = (400, 350), quality: int = 90, seed: int = 0,
                  classes: list[str] | None = None) -> list[str]:
    """Write ``<out_dir>/nXXXXXXXX.tar`` per synset, holding ``nXXXXXXXX_<i>.JPEG`` (i from 1).

    Args:
        out_dir: created if missing.
        images_per_class: JPEGs per tar.
        image_size: (width, height) of every image.
        quality: JPEG quality.
        seed: with the class ids, decides every image: the same arguments give the same bytes.
        classes: synset ids; the 16 leaves of ``DEMO_SYNSETS`` by default (the demo itself adds
            their four groups: ``DEMO_CLASSES``).

    Returns:
        The synset ids written. A tar already holding the same images is kept (reruns are quick);
        each tar is written under a temporary name and then renamed.
    """
    classes = list(DEMO_SYNSETS if classes is None else classes)
    _check(classes, images_per_class, image_size, quality)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    systems = class_systems(classes, seed=seed)
    for synset in classes:
        target = out / f"{synset}.tar"
        if _same_tar(target, images_per_class,
                     _encode(synset, systems[synset], 1, image_size, quality, seed)[0]):
            continue
        images = _encode(synset, systems[synset], images_per_class, image_size, quality, seed)
        tmp = out / f".{synset}.tar.tmp"
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in images:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)  # never a half-written tar under the final name
    return classes


def class_systems(classes: list[str], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Each class's iterated function system, derived from where it sits in the WordNet tree.

    A system is a float array [maps, 6]: rows (a, b, c, d, e, f) of the affine maps
    (x, y) -> (a x + b y + e, c x + d y + f). The classes' common ancestor draws 3 or 4 maps;
    every branching on a class's path below it (a node whose parent has several children among
    the classes' paths, or a node that is a class) adds a seeded step, ``STEPS`` by depth, so
    classes that share more of their path have closer systems. WordNet's long single-child
    chains (mammal, placental, ...) add nothing. Classes that are not all known synsets form a
    flat tree: each its own branch.
    """
    from hypernym.taxonomy.hierarchy import class_hierarchy

    paths = class_hierarchy(classes)["class_paths"]
    top = _common_prefix([paths[c] for c in classes])
    children: dict[str, set[str]] = {}
    for path in paths.values():
        for parent, node in zip(path, path[1:], strict=False):
            children.setdefault(parent, set()).add(node)
    root = _rng(seed, "root")
    base = root.uniform(-1, 1, (int(root.integers(3, 5)), 6))
    out = {}
    for c in classes:
        path = paths[c]
        steps = [node for i, node in enumerate(path) if i >= max(top, 1)
                 and (node in paths or len(children.get(path[i - 1], ())) > 1)] or [c]
        system = base.copy()
        for depth, node in enumerate(steps):
            system += _rng(seed, node).normal(0.0, STEPS[min(depth, len(STEPS) - 1)], base.shape)
        out[c] = _contract(np.clip(system, -1.0, 1.0))
    return out


def render(system: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One image of ``system`` at ``size`` (width, height), drawn by ``rng``.

    Per image: every parameter moves by N(0, ``JITTER``), the chaos game runs, the point cloud
    is tilted (and mirrored half the time), rasterised on a coarse square grid (side drawn from
    ``GRID``), upsampled bilinearly to 45-90% of the shorter side, softened and placed at a random
    position: bright strokes on a dark ground, with noise, grey with a faint tint.

    The chaos game is a dozen lines of vectorised numpy: no maintained Python library renders
    IFS fractals (FractalDB's scripts are research code, not a package), and walking many chains
    at once keeps an image to a few milliseconds.
    """
    w, h = size
    params = _contract(np.clip(system + rng.normal(0, JITTER, system.shape), -1.0, 1.0))
    points = _chaos_game(params, rng)
    turn = rng.normal(0, 0.3)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    if rng.random() < 0.5:
        rot = rot @ np.diag([-1.0, 1.0])
    points = points @ rot.T
    lo, hi = points.min(axis=0), points.max(axis=0)
    grid = int(rng.integers(GRID[0], GRID[1] + 1))
    cells = ((points - lo) / float(max((hi - lo).max(), 1e-6)) * (grid - 1)).round().astype(int)
    raster = np.zeros((grid, grid), np.uint8)
    raster[cells[:, 1], cells[:, 0]] = 255
    side = max(int(rng.uniform(0.45, 0.9) * min(w, h)), 2)
    shape = Image.fromarray(raster).resize((side, side), Image.BILINEAR)
    shape = shape.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.04) * side))
    canvas = Image.new("L", (w, h), 0)
    canvas.paste(shape, (int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))))
    ground, ink = rng.uniform(0, 40), rng.uniform(170, 255)
    alpha = np.asarray(canvas, np.float32) / 255.0
    pixels = ground + (ink - ground) * alpha
    pixels += rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(0, 6))
    rgb = pixels[..., None] + rng.normal(0, 4, 3).astype(np.float32)  # a faint tint
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def _chaos_game(params: np.ndarray, rng: np.random.Generator, *, chains: int = 256,
                steps: int = 48, burn_in: int = 12) -> np.ndarray:
    """Points of the attractor: ``chains`` walks at once, each map chosen with probability
    proportional to |det| (FractalDB's rule), the first ``burn_in`` steps dropped."""
    linear, shift = params[:, :4].reshape(-1, 2, 2), params[:, 4:]
    weight = np.abs(np.linalg.det(linear)) + 1e-3
    choice = rng.choice(len(params), size=(steps, chains), p=weight / weight.sum())
    xy = rng.uniform(-1, 1, (chains, 2))
    out = np.empty((steps - burn_in, chains, 2))
    for t in range(steps):
        k = choice[t]
        xy = np.einsum("nij,nj->ni", linear[k], xy) + shift[k]
        if t >= burn_in:
            out[t - burn_in] = xy
    return out.reshape(-1, 2)


def _contract(system: np.ndarray) -> np.ndarray:
    """Scale each map's linear part so that its largest singular value is at most MAX_GAIN."""
    out = system.copy()
    linear = out[:, :4].reshape(-1, 2, 2)
    gain = np.linalg.norm(linear, ord=2, axis=(1, 2))
    out[:, :4] = (linear * np.minimum(1.0, MAX_GAIN / np.maximum(gain, 1e-9))[:, None, None]
                  ).reshape(-1, 4)
    return out


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator decided by the seed and a name (a class id), not by list positions."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


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


def _encode(synset: str, system: np.ndarray, count: int, size: tuple[int, int], quality: int,
            seed: int) -> list[tuple[str, bytes]]:
    rng = _rng(seed, f"images/{synset}")
    out = []
    for i in range(1, count + 1):
        buffer = io.BytesIO()
        render(system, size, rng).save(buffer, format="JPEG", quality=quality)
        out.append((f"{synset}_{i}.JPEG", buffer.getvalue()))
    return out


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
