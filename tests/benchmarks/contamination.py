"""Contamination-check throughput on this machine, against plain decoding in the same run.

    .venv/bin/python tests/benchmarks/contamination.py [--pretrain 2000] [--eval 500]

Generates varied 224x224 JPEGs (the 21K-P image size, quality 90) as two prepared datasets
(squish 224, the 21K-P recipe), then measures on the pretraining images:
(a) baseline: a full RGB decode (PIL), one core, a tight loop;
(b) the check's hashing (bytes hash + reduced-scale luma decode + 10 DCT hashes), one core;
(c) the whole check (``check_contamination``: Ray tasks over every shard of both datasets),
    on every core;
(d) the pair comparison alone (the 19 alignments of each pair), in ns per pair.
Prints images/s (per core; wall and CPU time), the ratios b/a and c/(b x cores), and extrapolates
to the 11.58 M images of 21K-P (train + val), checked against the 50,000 ImageNet-1K validation
images. ``--skip-ray`` measures (a), (b) and (d) only, in one process.
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
    check_contamination,
    hash_images,
    match,
)
from tests.integration.transfer.planted import draw, jpeg  # noqa: E402

FULL_21KP = 11_060_223 + 522_500
IN1K_VAL = 50_000


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``: on a shared machine the CPU time
    is the cost, the wall time also counts the waits for other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_all(samples) -> None:
    for _, data, _ in samples:
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB").load()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=500)
    parser.add_argument("--skip-ray", action="store_true",
                        help="only the one-core measurements (a), (b), (d)")
    args = parser.parse_args()
    configure_logging()
    cores = os.cpu_count() or 1
    samples = [(f"p{i}", jpeg(draw(i, (224, 224))), 0) for i in range(args.pretrain)]
    n = len(samples)
    kb = sum(len(s[1]) for s in samples) / n / 1024
    decode_all(samples[:50])  # warm the decoder
    decode = [n / t for t in timed(lambda: decode_all(samples))]
    index = []
    hashing = [n / t for t in timed(lambda: index.append(hash_images(samples)))]
    query = hash_images(samples[: args.eval])
    pair_ns = [t / (args.eval * n) * 1e9 for t in timed(lambda: match(query, index[0]))]
    print(f"{n} pretraining images (224x224, {kb:.1f} KB), {args.eval} evaluation images, "
          f"{cores} cores; per core, wall / CPU time:")
    print(f"(a) baseline, full RGB decode, 1 core      : {decode[0]:8.1f} / {decode[1]:8.1f} img/s")
    print(f"(b) contamination hashing, 1 core           : {hashing[0]:8.1f} / {hashing[1]:8.1f} "
          "img/s")
    print(f"(d) pair comparison (19 alignments)         : {pair_ns[0]:8.1f} / {pair_ns[1]:8.1f} "
          "ns per pair")
    print(f"ratio b / a: {hashing[0] / decode[0]:.2f} (CPU time {hashing[1] / decode[1]:.2f})")
    per_core = hashing[1]
    if not args.skip_ray:
        whole = check_on_shards(args, samples)
        print(f"(c) whole check (Ray tasks), {cores} cores       : {whole:8.1f} img/s "
              f"({whole / cores:.1f} per core); ratio c / (b x cores): "
              f"{whole / (hashing[0] * cores):.2f}")
        per_core = whole / cores
    hash_h = FULL_21KP / per_core / 3600
    pair_h = FULL_21KP * IN1K_VAL * pair_ns[1] * 1e-9 / 3600
    print(f"21K-P ({FULL_21KP:,} images) against ImageNet-1K val ({IN1K_VAL:,}): hashing "
          f"{hash_h:.1f} CPU-hours + comparisons {pair_h:.1f} CPU-hours = "
          f"{hash_h + pair_h:.1f} CPU-hours ({(hash_h + pair_h) * 60 / 64:.0f} min on 64 cores)")


def check_on_shards(args, samples) -> float:
    """Images/s of ``check_contamination`` over prepared shards (Ray tasks on every core)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, part in (("pre", samples), ("ev", [(f"e{i}", jpeg(draw(10**6 + i, (224, 224))),
                                                       0) for i in range(args.eval)])):
            for i, (_, data, _) in enumerate(part):
                path = root / name / f"c{i % 8}" / f"{i:06d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        ensure_ray()
        for name in ("pre", "ev"):
            prepare(parse_recipe({"kind": "prepare", "source": str(root / name),
                                  "output": str(root / f"{name}-ds"), "val_per_class": 0,
                                  "min_per_class": 0, "image_size": 224, "resize": "squish",
                                  "shard_samples": 250}), show_progress=False)
        check_contamination(str(root / "ev-ds"), str(root / "pre-ds"),
                            splits=("train",))  # warm the Ray workers' imports
        result = check_contamination(str(root / "ev-ds"), str(root / "pre-ds"),
                                     splits=("train",))
        print(f"whole check: found {result.exact} exact, {result.near} near (expected 0)")
        return (result.checked + result.against_images) / result.seconds


if __name__ == "__main__":
    main()
