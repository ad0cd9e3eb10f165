"""Prepare throughput on this machine, against the bound measured in the same run.

    .venv/bin/python tests/benchmarks/prepare.py [--classes 16] [--per-class 100]

Generates a winter21-layout source of ImageNet-sized JPEGs (500x375, quality 90), then
(a) bound: decode + resize + re-encode of the same images in one tight loop (one core), and
(b) hypernym prepare with the 21K-P recipe (squish 224, quality 90) as Ray tasks on every core.
Prints images/s, images/s per core and the ratio b / (a x cores), and extrapolates CPU-hours,
output bytes and shard count for the full winter21 release (14.2M images in, 11.58M kept).
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from pathlib import Path

from hypernym.config import parse_recipe
from hypernym.data.demo import make_winter21
from hypernym.data.images import process_image
from hypernym.data.prepare import prepare
from hypernym.runtime import configure_logging, ensure_ray

FULL_IN, FULL_KEPT = 14_197_122, 11_060_223 + 522_500  # winter21; 21K-P train + val


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    configure_logging()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "raw"
        from hypernym.data.demo import DEMO_SYNSETS

        classes = (DEMO_SYNSETS * 10)[: args.classes]
        make_winter21(src, images_per_class=args.per_class, image_size=(500, 375),
                      classes=list(dict.fromkeys(classes)))
        raw = []
        for tar_path in sorted(src.glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                raw += [tar.extractfile(m).read() for m in tar.getmembers()]
        n = len(raw)
        in_bytes = sum(map(len, raw))

        start = time.perf_counter()
        out_bytes = sum(len(process_image(d, size=224, resize="squish", quality=90))
                        for d in raw)
        bound = n / (time.perf_counter() - start)

        ensure_ray()  # start-up is not preparation work, and neither is a worker's first import
        import ray

        warm = ray.remote(num_cpus=1)(lambda: __import__("hypernym.data.shards") and 0)
        ray.get([warm.remote() for _ in range(cores)])
        recipe = parse_recipe({"kind": "prepare", "source": str(src),
                               "output": str(Path(tmp) / "out"), "min_per_class": 0,
                               "val_per_class": 5, "shard_samples": 200})
        start = time.perf_counter()
        manifest = prepare(recipe, show_progress=False)
        elapsed = time.perf_counter() - start
    ours = n / elapsed
    written = sum(s.bytes for v in manifest.splits.values() for s in v)
    print(f"images: {n} ({in_bytes / n / 1e3:.0f} KB in, {out_bytes / n / 1e3:.1f} KB out), "
          f"cores: {cores}")
    print(f"(a) bound, decode+resize+encode, 1 core : {bound:8.1f} img/s")
    print(f"(b) hypernym prepare, {cores} cores        : {ours:8.1f} img/s "
          f"({ours / cores:.1f} per core)")
    print(f"ratio b / (a x cores): {ours / (bound * cores):.2f}")
    per_core = ours / cores
    print("extrapolated to winter21 (at this machine's per-core rate):")
    print(f"  CPU-hours: {FULL_IN / per_core / 3600:,.0f}  "
          f"(e.g. {FULL_IN / per_core / 3600 / 64:,.1f} h on 64 cores)")
    kept = manifest.num_samples("train") + manifest.num_samples("val")
    shards = -(-11_060_223 // 1000) + -(-522_500 // 1000)
    print(f"  output: {FULL_KEPT * written / kept / 1e9:,.0f} GB in {shards:,} shards of 1000")


if __name__ == "__main__":
    main()
