"""Varied generated images and planted copies of them, for the contamination check's test and
benchmark.

Each image is a smooth background of random plane waves with 8-20 random ellipses, boxes,
triangles and lines and a little pixel noise, at a random size. The planted copies are the four
kinds the check must find: the same bytes, a resized copy, a copy re-encoded at another JPEG
quality, and a copy cropped by 5% (95% of each side kept, at a random offset).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("exact", "resized", "quality", "cropped")


def draw(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    background = np.zeros((h, w, 3))
    for _ in range(3):
        f, amp, phase = rng.uniform(0.5, 6, 2), rng.uniform(20, 70, 3), rng.uniform(0, 6.3)
        background += amp * np.sin(2 * np.pi * (f[0] * x + f[1] * y) + phase)[..., None]
    background += rng.integers(40, 200, 3)
    image = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 20))):
        x0, y0 = rng.uniform(-0.1, 1, 2) * (w, h)
        x1, y1 = (x0, y0) + rng.uniform(0.05, 0.5, 2) * (w, h)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        if kind == 0:
            pen.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            pen.rectangle([x0, y0, x1, y1], fill=colour)
        elif kind == 2:
            pen.polygon([tuple(rng.uniform(0, 1, 2) * (w, h)) for _ in range(3)], fill=colour)
        else:
            pen.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(2, 8)))
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-10, 11, (h, w, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def original(seed: int, lo: int = 96, hi: int = 200) -> bytes:
    rng = np.random.default_rng(10_000_000 + seed)
    return jpeg(draw(seed, (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))))


def planted_copy(data: bytes, kind: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "exact":
        return data
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    if kind == "resized":
        scale = rng.uniform(0.5, 0.8)
        return jpeg(image.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC))
    if kind == "quality":
        return jpeg(image, quality=int(rng.integers(30, 60)))
    cw, ch = round(w * 0.95), round(h * 0.95)
    ox, oy = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return jpeg(image.crop((ox, oy, ox + cw, oy + ch)))


def make_sources(root: Path, *, pretrain: int, distinct: int, planted_per_kind: int,
                 classes: int = 4) -> dict[str, str]:
    """Two folder-per-class sources: ``pretrain`` distinct images, and an evaluation source of
    ``distinct`` other images plus ``planted_per_kind`` copies of pretraining images per kind.

    Returns:
        evaluation file stem -> the kind of planted copy ("" for a distinct image).
    """
    truth = {}
    for i in range(pretrain):
        path = root / "pretrain" / f"c{i % classes}" / f"p{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(original(i))
    for i in range(distinct):
        path = root / "eval" / f"c{i % classes}" / f"d{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(original(pretrain + i))
        truth[path.stem] = ""
    n = 0
    for kind in KINDS:
        for _ in range(planted_per_kind):
            source = (n * 7) % pretrain  # spread over the pretraining images
            path = root / "eval" / f"c{n % classes}" / f"{kind}{source:05d}.jpg"
            path.write_bytes(planted_copy(original(source), kind, seed=n))
            truth[path.stem] = kind
            n += 1
    return truth
