"""Miniatures of the annotated source layouts, made on the spot (no downloads).

Every object is a filled rectangle of its class's colour exactly where its box says, on a dark
ground, so a test can find it in a stored image and compare it with the stored box (`found_box`).
Images come in several sizes, odd ones and one large enough for prepare's JPEG draft decode, so
that each resize mode scales the two axes differently.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["bus", "car", "cat", "dog"]
COLOURS = {"bus": (255, 40, 40), "car": (40, 255, 40), "cat": (40, 40, 255),
           "dog": (255, 255, 40), "n01440764": (255, 40, 255), "n01443537": (40, 255, 255)}
SIZES = [(120, 90), (97, 131), (401, 301), (150, 100)]
Box = tuple[str, tuple[int, int, int, int]]  # class, (x0, y0, x1, y1) in continuous pixels


def scene(seed: int, classes: list[str], *, objects: int = 2,
          size: tuple[int, int] | None = None) -> tuple[bytes, tuple[int, int], list[Box]]:
    """(JPEG bytes, (width, height), boxes): ``objects`` rectangles, each in its own column."""
    rng = np.random.default_rng(seed)
    w, h = size or SIZES[seed % len(SIZES)]
    pixels = np.full((h, w, 3), 20, np.uint8)
    boxes = []
    slot = w // objects
    for k in range(objects):
        label = classes[int(rng.integers(len(classes)))]
        bw = int(rng.integers(slot // 2, slot - 4))
        bh = int(rng.integers(h // 3, h - 8))
        x0 = k * slot + int(rng.integers(2, slot - bw - 1))
        y0 = int(rng.integers(2, h - bh - 1))
        pixels[y0 : y0 + bh, x0 : x0 + bw] = COLOURS[label]
        boxes.append((label, (x0, y0, x0 + bw, y0 + bh)))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue(), (w, h), boxes


def voc_xml(name: str, size: tuple[int, int], boxes: list[Box], *,
            difficult: set[int] = frozenset(), raw: list | None = None) -> bytes:
    """PASCAL VOC XML (1-based inclusive pixel indices); ``raw`` replaces the boxes' numbers."""
    objects = []
    for i, (label, (x0, y0, x1, y1)) in enumerate(boxes):
        numbers = raw[i] if raw else (x0 + 1, y0 + 1, x1, y1)
        objects.append(
            f"<object><name>{label}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(i in difficult)}</difficult><bndbox><xmin>{numbers[0]}</xmin>"
            f"<ymin>{numbers[1]}</ymin><xmax>{numbers[2]}</xmax><ymax>{numbers[3]}</ymax>"
            "</bndbox></object>")
    return (f"<annotation><folder>x</folder><filename>{name}</filename><size><width>{size[0]}"
            f"</width><height>{size[1]}</height><depth>3</depth></size>{''.join(objects)}"
            "</annotation>").encode()


def make_voc(root: Path, *, train: int = 6, val: int = 3) -> dict[str, list[Box]]:
    """A VOC layout with planted faults: an XML box outside the image (the object goes, its
    image stays), one with x1 < x0, an unreadable XML and a listed image without one (both
    images go). Returns the kept boxes by sample key; object 0 of image 1 is difficult."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    expected, ids = {}, {"train": [], "val": []}
    for n in range(train + val):
        image_id = f"2007_{n:06d}"
        data, size, boxes = scene(n, CLASSES)
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(data)
        if n == 2:  # an extra object past the right edge: it goes, the image stays
            xml = voc_xml(image_id, size, [("cat", (size[0] - 5, 2, size[0] + 40, 20)), *boxes])
        elif n == 3:  # x1 < x0 in the first object
            (a0, a1, a2, a3), (b0, b1, b2, b3) = boxes[0][1], boxes[1][1]
            xml = voc_xml(image_id, size, boxes,
                          raw=[(a2, a1 + 1, a0 + 1, a3), (b0 + 1, b1 + 1, b2, b3)])
            boxes = boxes[1:]
        else:
            xml = voc_xml(image_id, size, boxes, difficult={0} if n == 1 else set())
        (root / "Annotations" / f"{image_id}.xml").write_bytes(xml)
        ids["train" if n < train else "val"].append(image_id)
        expected[image_id] = boxes
    (root / "Annotations" / f"{ids['train'][4]}.xml").write_bytes(b"<annotation><obj")
    expected.pop(ids["train"][4])
    (root / "JPEGImages" / "2007_999999.jpg").write_bytes(scene(99, CLASSES)[0])
    ids["train"].append("2007_999999")  # listed, no XML
    for split, names in ids.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return expected


def make_coco(root: Path, *, per_split: dict[str, int] | None = None) -> dict[str, list[Box]]:
    """A COCO layout (annotations/instances_{train,val}2017.json beside train2017/, val2017/)
    with a crowd annotation, an annotation of an unknown image id, a box with x1 < x0 (negative
    width) and an image without annotations. Returns the kept boxes by sample key."""
    per_split = per_split or {"train": 6, "val": 3}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": 10 + i, "name": c, "supercategory": "thing"}
                  for i, c in enumerate(CLASSES)]
    expected, n = {}, 0
    for split, count in per_split.items():
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        images, anns = [], []
        for i in range(count):
            data, size, boxes = scene(100 + n, CLASSES)
            name = f"{n:012d}"
            (folder / f"{name}.jpg").write_bytes(data)
            images.append({"id": n, "file_name": f"{name}.jpg", "width": size[0],
                           "height": size[1]})
            if i == 1:
                boxes = []  # an image without annotations stays, with no labels
            for j, (label, (x0, y0, x1, y1)) in enumerate(boxes):
                anns.append({"id": len(anns), "image_id": n, "category_id": 10 + CLASSES.index(
                    label), "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(i == 0 and j == 0),
                    "area": (x1 - x0) * (y1 - y0)})
            if i == 2:  # negative width: skipped, its image keeps the other object
                anns[-1]["bbox"][2] *= -1
                boxes = boxes[:-1]
            expected[name] = boxes
            n += 1
        anns.append({"id": len(anns), "image_id": 9999, "category_id": 10, "bbox": [0, 0, 5, 5],
                     "iscrowd": 0})
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": categories}))
    return expected


def targz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def found_box(jpg: bytes, box: list[float], colour: tuple[int, int, int],
              margin: int = 3) -> tuple[int, int, int, int] | None:
    """The extent (x0, y0, x1, y1) of ``colour`` in the stored image around ``box``."""
    pixels = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"), np.int32)
    h, w = pixels.shape[:2]
    x0, y0 = max(int(box[0]) - margin, 0), max(int(box[1]) - margin, 0)
    x1, y1 = min(int(np.ceil(box[2])) + margin, w), min(int(np.ceil(box[3])) + margin, h)
    region = pixels[y0:y1, x0:x1]
    mask = np.abs(region - np.array(colour)).max(axis=-1) < 90
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
