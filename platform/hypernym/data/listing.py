"""The primitives of a source listing: where each raw image's bytes are, and how a class's
folder or per-synset tar is listed. Shared by `sources` (winter21, folders, tables) and `ilsvrc`.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field

from hypernym.errors import HypernymError

__all__ = ["IMAGE_EXTENSIONS", "Item", "Listing", "sample_key", "list_folder", "list_tar"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SYNSET = re.compile(r"^n\d{8}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Item:
    """One raw image: its class, a dot-free sample key, and where its bytes live."""

    class_id: str
    key: str
    source: str  # filesystem path of the file or of the tar holding it
    offset: int = -1  # data offset inside the tar; -1 for a plain file
    size: int = -1
    name: str = ""  # the image's file name without extension: how annotations join to it


@dataclass
class Listing:
    items: dict[str, list[Item]] = field(default_factory=dict)  # class id -> items
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skipped_sources: Counter = field(default_factory=Counter)  # source -> count
    # A validation split the source defines itself (ILSVRC-2012's); empty: prepare holds out
    # val_per_class images of each class instead.
    val: dict[str, list[Item]] = field(default_factory=dict)
    # Annotated sources (data/boxes.py): labels and boxes by item key. ``annotated``: every
    # sample's json carries labels and boxes (an item without an entry has its class as its one
    # label and no boxes).
    annotated: bool = False
    annotations: dict = field(default_factory=dict)  # item key -> boxes.ImageAnnotation
    annotation_skipped: Counter = field(default_factory=Counter)  # corrupt annotations
    annotation_stats: Counter = field(default_factory=Counter)  # e.g. box files read
    # A class vocabulary of the source's own (VOC, COCO, multi-label tables); ``items`` and
    # ``val`` are then grouped by each image's rarest label, only to plan the splits. None:
    # the groups are the classes.
    classes: list[str] | None = None


def sample_key(*parts: str) -> str:
    # webdataset groups files by the name up to the FIRST dot: keys must not contain dots.
    return "_".join(_UNSAFE.sub("_", p) for p in parts)


def list_tar(fs, tar_path: str, *, start: int = 0,
              name: str | None = None) -> tuple[str, list[Item], Counter]:
    """A synset's tar; ``start`` > 0: the tar ``name`` inside another tar (ILSVRC-2012's train
    archive), whose member offsets are then offsets in ``tar_path``, read in place."""
    class_id = (name or tar_path).rsplit("/", 1)[-1].removesuffix(".tar")
    if not _SYNSET.match(class_id):
        raise HypernymError(f"{name or tar_path}: per-synset tars are named nXXXXXXXX.tar (a "
                            "synset id)")
    items, skipped = [], Counter()
    with fs.open(tar_path, "rb") as fh:
        fh.seek(start)  # tarfile counts offsets from where the file stands
        try:
            with tarfile.open(fileobj=fh, mode="r:") as tar:
                for member in tar:
                    _add_member(items, skipped, class_id, tar_path, member)
        except (tarfile.TarError, EOFError, OSError):
            skipped["truncated_tar"] += 1  # members read before the damage are kept
    return class_id, items, skipped


def _add_member(items, skipped, class_id, tar_path, member: tarfile.TarInfo) -> None:
    if not member.isfile():
        return
    name = member.name.rsplit("/", 1)[-1]
    stem, _, ext = name.rpartition(".")
    if f".{ext.lower()}" not in IMAGE_EXTENSIONS:
        skipped["not_an_image"] += 1
    elif member.size == 0:
        skipped["empty_file"] += 1
    else:
        items.append(Item(class_id, sample_key(stem), tar_path, member.offset_data, member.size,
                          name=stem))


def list_folder(fs, class_dir: str) -> tuple[str, list[Item], Counter]:
    class_id = class_dir.rstrip("/").rsplit("/", 1)[-1]
    items, skipped, seen = [], Counter(), set()
    for info in sorted(fs.find(class_dir, detail=True).values(), key=lambda i: i["name"]):
        name = info["name"].rsplit("/", 1)[-1]
        stem, _, ext = name.rpartition(".")
        if f".{ext.lower()}" not in IMAGE_EXTENSIONS:
            skipped["not_an_image"] += 1
            continue
        if info.get("size", 1) == 0:
            skipped["empty_file"] += 1
            continue
        key = sample_key(class_id, stem)
        while key in seen:  # two names that sanitise alike
            key += "_"
        seen.add(key)
        items.append(Item(class_id, key, info["name"], name=stem))
    return class_id, items, skipped
