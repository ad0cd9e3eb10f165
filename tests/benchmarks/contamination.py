"""Contamination-check throughput on this machine, against plain decoding in the same run.

    .venv/bin/python tests/benchmarks/contamination.py [--pretrain 2000] [--eval 500]

Generates varied 224x224 JPEGs (the 21K-P image size, quality 90) as two prepared datasets
(squish 224, the 21K-P recipe), then measures on the pretraining images:
(a) baseline: a full RGB decode (PIL), one core, a tight loop;
(b) the check's hashing (bytes hash + reduced-scale luma decode + 10 DCT hashes), one core;
(c) the whole check (``check_contamination``: Ray tasks over every shard of both datasets),
    on every core;
(d) the pair comparison alone (the 19 alignments of each pair), in ns per pair.
Prints images/s (per core), the ratios b/a and c/(b x cores), and extrapolates to the 11.58 M
images of 21K-P (train + val), checked against the 50,000 ImageNet-1K validation images.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.* helpers

from PIL import Image  # noqa: E402

from hypernym.config import parse_recipe  # noqa: E402
from hypernym.data.prepare import prepare  # noqa: E402
from hypernym.runtime import configure_logging, ensure_ray  # noqa: E402
from hypernym.transfer.contamination import (  # noqa: E402
    _shard_samples,
    check_contamination,
    hash_images,
    match,
)
from tests.integration.transfer.planted import draw, jpeg  # noqa: E402

FULL_21KP = 11_060_223 + 522_500
IN1K_VAL = 50_000


def write_source(root: Path, first: int, count: int) -> None:
    for i in range(first, first + count):
        path = root / f"c{i % 8}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(draw(i, (224, 224))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=500)
    args = parser.parse_args()
    configure_logging()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_source(root / "pre", 0, args.pretrain)
        write_source(root / "ev", args.pretrain, args.eval)
        ensure_ray()
        for name in ("pre", "ev"):
            prepare(parse_recipe({"kind": "prepare", "source": str(root / name),
                                  "output": str(root / f"{name}-ds"), "val_per_class": 0,
                                  "min_per_class": 0, "image_size": 224, "resize": "squish",
                                  "shard_samples": 250}), show_progress=False)
        shards = sorted((root / "pre-ds").glob("train-*.tar"))
        samples = [s for shard in shards for s in _shard_samples(str(shard))]
        n = len(samples)
        kb = sum(len(s[1]) for s in samples) / n / 1024

        start = time.perf_counter()
        for _, data, _ in samples:
            with Image.open(io.BytesIO(data)) as image:
                image.convert("RGB").load()
        decode = n / (time.perf_counter() - start)

        start = time.perf_counter()
        index = hash_images(samples)
        hashing = n / (time.perf_counter() - start)

        check_contamination(str(root / "ev-ds"), str(root / "pre-ds"),
                            splits=("train",))  # warm the Ray workers' imports
        start = time.perf_counter()
        result = check_contamination(str(root / "ev-ds"), str(root / "pre-ds"),
                                     splits=("train",))
        whole = (result.checked + result.against_images) / (time.perf_counter() - start)

        query = hash_images(_shard_samples(str(sorted((root / "ev-ds").glob("*.tar"))[0])))
        start = time.perf_counter()
        match(query, index)
        pair_ns = (time.perf_counter() - start) / (len(query.keys) * n) * 1e9

    print(f"{n} pretraining images (224x224, {kb:.1f} KB), {args.eval} evaluation images, "
          f"{cores} cores; found {result.exact} exact, {result.near} near (expected 0)")
    print(f"(a) baseline, full RGB decode, 1 core      : {decode:9.1f} img/s")
    print(f"(b) contamination hashing, 1 core           : {hashing:9.1f} img/s")
    print(f"(c) whole check (Ray tasks), {cores} cores       : {whole:9.1f} img/s "
          f"({whole / cores:.1f} per core)")
    print(f"(d) pair comparison (19 alignments)         : {pair_ns:9.1f} ns per pair")
    print(f"ratio b / a: {hashing / decode:.2f}   ratio c / (b x cores): "
          f"{whole / (hashing * cores):.2f}")
    hash_h = FULL_21KP / (whole / cores) / 3600
    pair_h = FULL_21KP * IN1K_VAL * pair_ns * 1e-9 / 3600
    print(f"21K-P ({FULL_21KP:,} images) against ImageNet-1K val ({IN1K_VAL:,}): hashing "
          f"{hash_h:.1f} CPU-hours + comparisons {pair_h:.1f} CPU-hours = "
          f"{hash_h + pair_h:.1f} CPU-hours ({(hash_h + pair_h) * 60 / 64:.0f} min on 64 cores)")


if __name__ == "__main__":
    main()
