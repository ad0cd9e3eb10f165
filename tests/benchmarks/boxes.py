"""What ImageNet's boxes cost prepare, against baselines measured in the same run.

    .venv/bin/python tests/benchmarks/boxes.py [--files 20000] [--images 300]

(a) baseline: stream-read a tar.gz of ``--files`` ILSVRC-style box XML files (every member's
    bytes, nothing parsed), as any reader of the archive must;
(b) hypernym's join (`join_boxes`): the same archive read, every XML parsed and checked, and
    joined to a listing of the images by name.
Prints files/s, the ratio b / a, and the time (b) takes for the 544,546 files of
ILSVRC2012_bbox_train_v2.tar.gz.
(c) a shard of ``--images`` 500x375 JPEGs written without annotations, and (d) the same with
two boxes each (squish 224), best of three each: the ratio d / c is what carrying annotations
adds to a shard task.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hypernym.data.annotated import join_boxes
from hypernym.data.boxes import ImageAnnotation, ObjectBox
from hypernym.data.listing import Item, Listing
from hypernym.data.shards import PARTS_DIR, ShardAnnotations, write_shard

ILSVRC_TRAIN_FILES = 544_546
SYNSET = "n01440764"


def xml(stem: str, rng: np.random.Generator) -> bytes:
    objects = "".join(
        f"<object><name>{SYNSET}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
        f"<xmax>{x + 100}</xmax><ymax>{y + 80}</ymax></bndbox></object>"
        for x, y in rng.integers(1, 250, (int(rng.integers(1, 3)), 2)))
    return (f"<annotation><folder>{SYNSET}</folder><filename>{stem}</filename><source>"
            "<database>ILSVRC_2012</database></source><size><width>500</width><height>375"
            f"</height><depth>3</depth></size><segmented>0</segmented>{objects}"
            "</annotation>").encode()


def archive(path: Path, files: int) -> list[str]:
    rng = np.random.default_rng(0)
    stems = [f"{SYNSET}_{i}" for i in range(files)]
    with tarfile.open(path, "w:gz") as tar:
        for stem in stems:
            data = xml(stem, rng)
            info = tarfile.TarInfo(f"{SYNSET}/{stem}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return stems


def boxes_join(tmp: Path, files: int) -> None:
    path = tmp / "ILSVRC2012_bbox_train_v2.tar.gz"
    stems = archive(path, files)
    start = time.perf_counter()
    with tarfile.open(path, "r|gz") as tar:
        read = sum(len(tar.extractfile(m).read()) for m in tar if m.isfile())
    baseline = time.perf_counter() - start
    listing = Listing(items={SYNSET: [Item(SYNSET, s, "x.tar", 0, 1, name=s) for s in stems]})
    start = time.perf_counter()
    counts = join_boxes(listing, [str(path)])
    joined = time.perf_counter() - start
    assert counts["box_files"] == files and len(listing.annotations) == files and read
    print(f"(a) stream-read {files} XML files : {files / baseline:10.0f} files/s")
    print(f"(b) read + parse + join            : {files / joined:10.0f} files/s")
    print(f"ratio b / a: {baseline / joined:.2f}; ILSVRC-2012 train boxes "
          f"({ILSVRC_TRAIN_FILES:,} files): about {ILSVRC_TRAIN_FILES / files * joined:.0f} s")


def shard_overhead(tmp: Path, images: int) -> None:
    rng = np.random.default_rng(1)
    src = tmp / "images"
    src.mkdir()
    items, notes = [], {}
    for i in range(images):
        pixels = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
        pixels[::2] //= 2  # some structure, so the JPEG is not all noise
        Image.fromarray(pixels).save(src / f"im{i}.jpg", quality=90)
        items.append(Item(SYNSET, f"im{i}", str(src / f"im{i}.jpg"), name=f"im{i}"))
        notes[f"im{i}"] = ImageAnnotation((SYNSET,), (
            ObjectBox(SYNSET, (10.0, 20.0, 200.0, 300.0)),
            ObjectBox(SYNSET, (250.0, 40.0, 480.0, 360.0), ("truncated",))), (500, 375))
    times = {"plain": float("inf"), "annotated": float("inf")}
    for repeat in range(3):  # alternated, best of three: the first pass also warms caches
        for label, given in (("plain", None), ("annotated", ShardAnnotations(notes))):
            out = tmp / f"{label}-{repeat}"
            (out / PARTS_DIR).mkdir(parents=True)
            start = time.perf_counter()
            result = write_shard(items=items, name="train-000000.tar", output=str(out),
                                 source=str(src), class_index={SYNSET: 0}, size=224,
                                 resize="squish", quality=90, annotations=given)
            times[label] = min(times[label], time.perf_counter() - start)
            assert result.info.samples == images and not result.skipped
    print(f"(c) shard of {images} images, no annotations : {images / times['plain']:8.1f} img/s")
    print(f"(d) the same with 2 boxes each          : {images / times['annotated']:8.1f} img/s")
    print(f"ratio d / c (time): {times['annotated'] / times['plain']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        boxes_join(Path(tmp), args.files)
        shard_overhead(Path(tmp), args.images)


if __name__ == "__main__":
    main()
