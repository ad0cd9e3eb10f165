"""The COCO layout as a prepare source.

    ROOT/annotations/instances_<name>.json    COCO object-detection annotations
    ROOT/<name>/...                           its images (or ROOT/images/<name>/, ROOT/images/)

as the COCO download (``instances_train2017.json`` beside ``train2017/``) and CVAT's COCO export
(``instances_default.json`` beside ``images/``) are laid out. A file whose name holds ``val`` is
the val split; any other is train (without a val file, prepare holds out ``val_per_class``
images per label group). The classes are the categories, in the order of their ids; an image's
labels are the categories of its annotations, crowd ones included (their boxes carry the
``crowd`` flag). An image without annotations stays, with no labels. Annotations that name an
unknown image or category, or whose box fails the checks of data/boxes.py, are left out and
counted.
"""

from __future__ import annotations

import json
from collections import Counter

from hypernym.data.annotated import vocabulary_listing
from hypernym.data.boxes import ImageAnnotation, ObjectBox, check_box
from hypernym.data.listing import Item, Listing, sample_key
from hypernym.data.storage import join, open_fs
from hypernym.errors import HypernymError

__all__ = ["coco_files", "list_coco"]


def coco_files(fs, root: str) -> list[str]:
    """The ``instances_*.json`` files of a COCO-layout folder (in ``annotations/``)."""
    folder = join(root, "annotations")
    if not fs.isdir(folder):
        return []
    return sorted(p for p in fs.ls(folder, detail=False)
                  if p.rsplit("/", 1)[-1].startswith("instances_") and p.endswith(".json"))


def list_coco(uri: str) -> Listing:
    """The listing of a COCO-layout folder, with every image's annotation.

    Raises:
        HypernymError: no annotation file, one that is not COCO JSON, no image folder for one,
            or two files that disagree on the categories.
    """
    fs, root = open_fs(uri)
    files = coco_files(fs, root)
    if not files:
        raise HypernymError(f"{uri} has no annotations/instances_*.json: not the COCO layout "
                            "(annotations/instances_train2017.json beside train2017/)")
    categories: dict[int, str] = {}
    parts: dict[str, list] = {"train": [], "val": []}
    skipped, seen = Counter(), set()
    for file in files:
        name = file.rsplit("/", 1)[-1].removeprefix("instances_").removesuffix(".json")
        data = _load(fs, file)
        for cid, cname in _categories(data, file).items():
            if categories.setdefault(cid, cname) != cname:
                raise HypernymError(f"{file}: category {cid} is {cname!r} here but "
                                    f"{categories[cid]!r} in another annotation file")
        folder = _image_folder(fs, root, name, uri)
        split = "val" if "val" in name else "train"
        parts[split] += _images(data, folder, categories, skipped, seen)
    classes = [categories[c] for c in sorted(categories)]
    if len(set(classes)) != len(classes):
        raise HypernymError(f"{uri}: two categories share a name; category names are the "
                            "dataset's classes and must be unique")
    return vocabulary_listing(parts["train"], parts["val"], classes=classes, skipped=skipped)


def _load(fs, file: str) -> dict:
    try:
        data = json.loads(fs.cat_file(file))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HypernymError(f"{file} is not readable JSON ({exc}); a COCO annotation file is "
                            "one JSON object with images, annotations and categories") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise HypernymError(f"{file}: not COCO annotations (no 'images' list)")
    return data


def _categories(data: dict, file: str) -> dict[int, str]:
    try:
        return {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    except (KeyError, TypeError, ValueError):
        raise HypernymError(f"{file}: every category needs an integer 'id' and a 'name'") \
            from None


def _image_folder(fs, root: str, name: str, uri: str) -> str:
    for folder in (join(root, name), join(root, "images", name), join(root, "images")):
        if fs.isdir(folder):
            return folder
    raise HypernymError(f"{uri}: no image folder for instances_{name}.json: expected {name}/ "
                        f"or images/{name}/ or images/ beside annotations/")


def _images(data: dict, folder: str, categories: dict[int, str], skipped: Counter,
            seen: set[str]) -> list[tuple[Item, ImageAnnotation]]:
    images: dict = {}
    for image in data["images"]:
        try:
            images[image["id"]] = (str(image["file_name"]),
                                   (int(image["width"]), int(image["height"])), [])
        except (KeyError, TypeError, ValueError):
            skipped["image_entry_malformed"] += 1
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), int | str) \
                or not isinstance(ann.get("category_id"), int | str):
            skipped["annotation_malformed"] += 1
        elif ann["image_id"] not in images:
            skipped["image_id_unknown"] += 1
        elif ann.get("category_id") not in categories:
            skipped["category_unknown"] += 1
        else:
            images[ann["image_id"]][2].append(ann)
    out = []
    for file_name, size, anns in images.values():
        labels, boxes = set(), []
        for ann in anns:
            label = categories[ann["category_id"]]
            if ann.get("bbox") is None:  # a label without a box
                labels.add(label)
                continue
            try:  # [x, y, width, height]
                x, y, w, h = (float(v) for v in ann["bbox"])
                box, reason = check_box([x, y, x + w, y + h], size)
            except (TypeError, ValueError):
                box, reason = None, "box_not_numbers"
            if reason:
                skipped[reason] += 1
                continue
            labels.add(label)
            boxes.append(ObjectBox(label, box, ("crowd",) if ann.get("iscrowd") else ()))
        stem = file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        key = sample_key(stem)
        while key in seen:  # the same name in two splits or sub-folders
            key += "_"
        seen.add(key)
        item = Item("", key, join(folder, file_name), name=stem)
        out.append((item, ImageAnnotation(tuple(sorted(labels)), tuple(boxes), size)))
    return out
