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
Expected = tuple[tuple[int, int], list[Box]]  # a sample's source size and its boxes
SYNSETS = ["n01440764", "n01443537"]


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


def make_voc(root: Path, *, train: int = 6, val: int = 3) -> dict[str, Expected]:
    """A VOC layout with planted faults: an XML box outside the image (the object goes, its
    image stays), one with x1 < x0, an unreadable XML and a listed image without one (both
    images go). Returns what each kept sample holds, by key; object 0 of image 1 is
    difficult."""
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
        expected[image_id] = (size, boxes)
    (root / "Annotations" / f"{ids['train'][4]}.xml").write_bytes(b"<annotation><obj")
    expected.pop(ids["train"][4])
    (root / "JPEGImages" / "2007_999999.jpg").write_bytes(scene(99, CLASSES)[0])
    ids["train"].append("2007_999999")  # listed, no XML
    for split, names in ids.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return expected


def make_coco(root: Path, *, per_split: dict[str, int] | None = None) -> dict[str, Expected]:
    """A COCO layout (annotations/instances_{train,val}2017.json beside train2017/, val2017/)
    with a crowd annotation, an annotation of an unknown image id, a box with x1 < x0 (negative
    width) and an image without annotations. Returns what each sample holds, by key."""
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
            expected[name] = (size, boxes)
            n += 1
        anns.append({"id": len(anns), "image_id": 9999, "category_id": 10, "bbox": [0, 0, 5, 5],
                     "iscrowd": 0})
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": categories}))
    return expected


def found_box(jpg: bytes, box: list[float], colour: tuple[int, int, int],
              margin: int = 3) -> tuple[int, int, int, int] | None:
    """The extent (x0, y0, x1, y1) of the patch of ``colour`` at the centre of ``box`` in a
    stored image (looked for within ``margin`` pixels around the box), or None."""
    from scipy import ndimage

    pixels = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"), np.int32)
    h, w = pixels.shape[:2]
    x0, y0 = max(int(box[0]) - margin, 0), max(int(box[1]) - margin, 0)
    x1, y1 = min(int(np.ceil(box[2])) + margin, w), min(int(np.ceil(box[3])) + margin, h)
    mask = np.abs(pixels[y0:y1, x0:x1] - np.array(colour)).max(axis=-1) < 90
    parts, _ = ndimage.label(mask)
    centre = parts[int((box[1] + box[3]) / 2) - y0, int((box[0] + box[2]) / 2) - x0]
    if not centre:
        return None
    ys, xs = np.nonzero(parts == centre)  # a neighbour of the same colour is another patch
    return x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def synset_images(per_class: int = 4) -> dict[str, dict[str, tuple[bytes, tuple, list[Box]]]]:
    """{synset: {image stem: (jpeg, size, boxes)}}: every object of an image is its class."""
    return {w: {f"{w}_{i}": scene(200 + 10 * c + i, [w], objects=1 + i % 2)
                for i in range(1, per_class + 1)}
            for c, w in enumerate(SYNSETS)}


def make_full_release(root: Path) -> tuple[Path, Path, dict[str, Expected]]:
    """(winter21 folder, Annotation folder, expected): per-synset image tars and the full
    release's per-synset ``Annotation/nXXXXXXXX.tar.gz`` of XML files, for some images only
    (the others stay without boxes), with a box outside its image, an unreadable XML, an XML
    for an image that is not there, and a damaged archive."""
    images, notes = root / "winter21", root / "Annotation"
    images.mkdir(parents=True)
    notes.mkdir()
    expected = {}
    for synset, members in synset_images().items():
        (images / f"{synset}.tar").write_bytes(
            tar_bytes({f"{stem}.JPEG": jpg for stem, (jpg, _, _) in members.items()}))
        xmls = {}
        for i, (stem, (_, size, boxes)) in enumerate(members.items()):
            if i == 0:  # no box file: stays, without boxes
                expected[stem] = (size, [])
                continue
            extra = [(synset, (size[0] - 3, 1, size[0] + 30, 9))] if i == 1 else []
            xmls[f"Annotation/{synset}/{stem}.xml"] = voc_xml(stem, size, extra + boxes)
            expected[stem] = (size, boxes)
        last = list(members)[-1]
        if synset == SYNSETS[1]:  # an unreadable XML: its image stays, without boxes
            xmls[f"Annotation/{synset}/{last}.xml"] = b"<annotation><size>"
            expected[last] = (expected[last][0], [])
        xmls[f"Annotation/{synset}/{synset}_999.xml"] = voc_xml("x", (10, 10), [])
        (notes / f"{synset}.tar.gz").write_bytes(tar_bytes(xmls, "w:gz"))
    (notes / "n09999999.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    return images, notes, expected


def make_ilsvrc(root: Path) -> tuple[Path, list[Path], dict[str, Expected]]:
    """(ILSVRC-2012 source in its extracted layout, [train box archive, val box archive],
    expected): ``ILSVRC2012_bbox_train_v2.tar.gz`` with ``nXXXXXXXX/nXXXXXXXX_N.xml`` for some
    training images and ``ILSVRC2012_bbox_val_v3.tgz`` with ``val/ILSVRC2012_val_N.xml``."""
    source = root / "ilsvrc"
    expected, train_xml, val_xml = {}, {}, {}
    for synset, members in synset_images().items():
        (source / "train").mkdir(parents=True, exist_ok=True)
        (source / "train" / f"{synset}.tar").write_bytes(
            tar_bytes({f"{stem}.JPEG": jpg for stem, (jpg, _, _) in members.items()}))
        for i, (stem, (_, size, boxes)) in enumerate(members.items()):
            if i % 2 == 0:
                train_xml[f"{synset}/{stem}.xml"] = voc_xml(stem, size, boxes)
            expected[stem] = (size, boxes if i % 2 == 0 else [])
    labels = [2, 1, 1, 2]  # ILSVRC2012_ID of val images 1..4
    (source / "val").mkdir()
    for n, label in enumerate(labels, 1):
        synset = SYNSETS[label - 1]
        jpg, size, boxes = scene(300 + n, [synset])
        stem = f"ILSVRC2012_val_{n:08d}"
        (source / "val" / f"{stem}.JPEG").write_bytes(jpg)
        val_xml[f"val/{stem}.xml"] = voc_xml(stem, size, boxes)
        expected[f"val_{n:08d}"] = (size, boxes)
    kit = source / "ILSVRC2012_devkit_t12" / "data"
    kit.mkdir(parents=True)
    (kit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, labels)))
    (kit / "meta.txt").write_text("".join(f"{i} {w}\n" for i, w in enumerate(SYNSETS, 1)))
    archives = [root / "ILSVRC2012_bbox_train_v2.tar.gz", root / "ILSVRC2012_bbox_val_v3.tgz"]
    archives[0].write_bytes(tar_bytes(train_xml, "w:gz"))
    archives[1].write_bytes(tar_bytes(val_xml, "w:gz"))
    return source, archives, expected


def make_tables(root: Path) -> tuple[Path, Path, dict[str, Expected], dict[str, list[str]]]:
    """(CSV, JSONL, expected boxes, labels) of the same images: the CSV has ``labels`` joined
    by ``|`` and a ``split`` column; the JSONL has ``labels`` as lists and ``boxes``, one of
    them inverted (skipped; its label stays, as the row's labels say)."""
    (root / "imgs").mkdir(parents=True)
    rows, expected, every = [], {}, {}
    for n in range(9):
        jpg, size, boxes = scene(400 + n, CLASSES)
        (root / "imgs" / f"im{n}.jpg").write_bytes(jpg)
        labels = sorted({b[0] for b in boxes})
        rows.append((f"imgs/im{n}.jpg", labels, "val" if n >= 7 else "train", boxes))
        expected[f"im{n}"], every[f"im{n}"] = (size, boxes), labels
    csv = root / "multi.csv"
    csv.write_text("path,labels,split\n" + "".join(
        f"{p},{'|'.join(labels)},{split}\n" for p, labels, split, _ in rows))
    lines = []
    for n, (p, labels, split, boxes) in enumerate(rows):
        objects = [{"label": c, "box": list(b), "flags": []} for c, b in boxes]
        if n == 0:  # x1 < x0: skipped, the image keeps its other box
            objects[0]["box"] = [objects[0]["box"][2], objects[0]["box"][1],
                                 objects[0]["box"][0], objects[0]["box"][3]]
            expected[f"im{n}"] = (expected[f"im{n}"][0], boxes[1:])
        lines.append(json.dumps({"path": p, "labels": labels, "split": split,
                                 "boxes": objects}))
    jsonl = root / "multi.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    return csv, jsonl, expected, every


def check_samples(samples: list[dict], expected: dict[str, Expected], classes: list[str],
                  *, tolerance: float = 1.5) -> int:
    """Compare each sample's stored boxes with the source's: the same classes, each box where
    the source box lands after the resize (the stored size over the source size on each axis),
    and on the rectangle actually drawn in the stored image. Returns the boxes checked."""
    checked = 0
    for sample in samples:
        meta = json.loads(sample["json"])
        size, boxes = expected[sample["__key__"]]
        stored = sorted(meta["boxes"], key=lambda b: b["box"][0])
        assert [classes[b["class"]] for b in stored] == [c for c, _ in boxes], sample["__key__"]
        assert set(meta["labels"]) >= {b["class"] for b in stored}
        width, height = Image.open(io.BytesIO(sample["jpg"])).size
        assert meta["size"] == [width, height]
        sx, sy = width / size[0], height / size[1]
        for b, (label, source) in zip(stored, boxes, strict=True):
            want = (source[0] * sx, source[1] * sy, source[2] * sx, source[3] * sy)
            assert np.allclose(b["box"], want, atol=tolerance), (sample["__key__"], b, want)
            seen = found_box(sample["jpg"], b["box"], COLOURS[label])
            assert seen is not None and np.allclose(b["box"], seen, atol=tolerance), \
                (sample["__key__"], b["box"], seen)
            checked += 1
    return checked
