"""The PASCAL VOC layout as a prepare source.

    ROOT/JPEGImages/<id>.jpg
    ROOT/Annotations/<id>.xml          one PASCAL VOC XML per image
    ROOT/ImageSets/Main/train.txt      image ids of the train split, one per line
    ROOT/ImageSets/Main/val.txt        image ids of the val split (optional)

``ROOT`` is the folder holding these (``VOCdevkit/VOC2012`` in the official download). The
classes are the object names found, sorted; an image's labels are the classes of its objects,
``difficult`` ones included (their boxes carry the flag). Without ``val.txt``, prepare holds out
``val_per_class`` images per label group, as for a multi-label table. An image listed without a
readable XML is left out and counted (its labels are unknown); a box that fails the checks of
data/boxes.py is left out and counted, and its image stays.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from hypernym.data.annotated import vocabulary_listing
from hypernym.data.boxes import parse_voc_xml
from hypernym.data.listing import IMAGE_EXTENSIONS, Item, Listing, sample_key
from hypernym.data.storage import join, open_fs
from hypernym.errors import HypernymError

__all__ = ["is_voc", "list_voc"]

_LAYOUT = ("PASCAL VOC layout: JPEGImages/, Annotations/<id>.xml and ImageSets/Main/train.txt "
           "(and val.txt) in one folder, e.g. VOCdevkit/VOC2012")


def is_voc(names: set[str]) -> bool:
    """Whether a folder holding ``names`` looks like the VOC layout."""
    return {"JPEGImages", "Annotations"} <= names


def list_voc(uri: str, *, threads: int = 8) -> Listing:
    """The listing of a VOC-layout folder, with every image's annotation.

    Raises:
        HypernymError: a part of the layout is missing.
    """
    fs, root = open_fs(uri)
    for part in ("JPEGImages", "Annotations", "ImageSets/Main/train.txt"):
        if not fs.exists(join(root, part)):
            raise HypernymError(f"{uri} has no {part}: not the {_LAYOUT}")
    images = {}
    for path in fs.find(join(root, "JPEGImages")):
        stem, _, ext = path.rsplit("/", 1)[-1].rpartition(".")
        if f".{ext.lower()}" in IMAGE_EXTENSIONS:
            images.setdefault(stem, path)
    ids = {split: _ids(fs, join(root, "ImageSets", "Main", f"{split}.txt"))
           for split in ("train", "val")}
    skipped, missing = Counter(), Counter()
    twice = set(ids["train"]) & set(ids["val"])
    if twice:
        skipped["image_in_both_splits"] += len(twice)  # kept in train only
        ids["val"] = [i for i in ids["val"] if i not in twice]

    def read(image_id: str):
        try:
            data = fs.cat_file(join(root, "Annotations", f"{image_id}.xml"))
        except FileNotFoundError:
            return "missing", None
        except OSError:
            return "unreadable", None
        bad = Counter()
        try:
            return bad, parse_voc_xml(data, bad)
        except ValueError:
            return "unreadable", None

    parts: dict[str, list] = {"train": [], "val": []}
    with ThreadPoolExecutor(threads) as pool:  # I/O bound: one small read per image on S3
        for split, split_ids in ids.items():
            for image_id, (bad, ann) in zip(split_ids, pool.map(read, split_ids), strict=True):
                if ann is None:
                    skipped[bad] += 1  # the image goes too: its labels are unknown
                    continue
                skipped.update(bad)
                if image_id not in images:
                    missing["missing_image"] += 1
                    continue
                item = Item("", sample_key(image_id), images[image_id], name=image_id)
                parts[split].append((item, ann))
    if not parts["train"] and not parts["val"]:
        raise HypernymError(f"{uri}: none of the images in ImageSets/Main has both its image "
                            f"and a readable annotation ({dict(skipped | missing)})")
    listing = vocabulary_listing(parts["train"], parts["val"], skipped=skipped)
    listing.skipped.update(missing)
    if missing:
        listing.skipped_sources[join(root, "JPEGImages")] += missing.total()
    return listing


def _ids(fs, path: str) -> list[str]:
    if not fs.exists(path):
        return []
    ids = [line.split()[0] for line in fs.cat_file(path).decode().splitlines() if line.strip()]
    return list(dict.fromkeys(ids))  # a repeated id is one image
