"""Small raw sources made on the spot: winter21-layout tars and class folders, with planted
bad inputs, and one local Ray for the module."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.tars import add_member

SYNSETS = ["n02085620", "n02085782", "n02123045", "n02123159", "n03100240"]


def jpeg(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def make_winter21(root: Path, *, per_class: int = 12, bad: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for c, synset in enumerate(SYNSETS):
        with tarfile.open(root / f"{synset}.tar", "w") as tar:
            for i in range(per_class):
                add_member(tar, f"{synset}_{i}.JPEG", jpeg(c * 1000 + i))
            if bad and c == 0:
                add_member(tar, f"{synset}_corrupt.JPEG", b"\xff\xd8\xff garbage")
                add_member(tar, f"{synset}_empty.JPEG", b"")
                add_member(tar, "README.txt", b"not an image")
                truncated = jpeg(99, size=(300, 300))
                add_member(tar, f"{synset}_truncated.JPEG", truncated[: len(truncated) // 3])
    return root


def small_recipe(source, output, **settings):
    """A prepare recipe for tiny test data: every class kept, small images and shards."""
    from hypernym.config import parse_recipe

    base = {"val_per_class": 1, "min_per_class": 0, "image_size": 24, "shard_samples": 10}
    return parse_recipe({"kind": "prepare", "source": str(source), "output": str(output),
                         **base, **settings})
