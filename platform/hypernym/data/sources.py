"""Raw image sources: the winter21 release (one tar per synset), a folder per class, a table of
paths, and the ILSVRC-2012 release (ilsvrc.py).

Listing records, for every image, where its bytes are: a plain file, or an offset and size inside
a source tar, so that a shard writer reads one member with a seek instead of re-reading the tar.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hypernym.data.storage import open_fs
from hypernym.errors import HypernymError

__all__ = ["IMAGE_EXTENSIONS", "Item", "Listing", "detect_format", "list_source", "read_item"]

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


@dataclass
class Listing:
    items: dict[str, list[Item]] = field(default_factory=dict)  # class id -> items
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skipped_sources: Counter = field(default_factory=Counter)  # source -> count
    # A validation split the source defines itself (ILSVRC-2012's); empty: prepare holds out
    # val_per_class images of each class instead.
    val: dict[str, list[Item]] = field(default_factory=dict)


def _key(*parts: str) -> str:
    # webdataset groups files by the name up to the FIRST dot: keys must not contain dots.
    return "_".join(_UNSAFE.sub("_", p) for p in parts)


def detect_format(uri: str) -> str:
    """``winter21`` for a directory of nXXXXXXXX.tar files, ``folder`` for class folders,
    ``ilsvrc2012`` for the ILSVRC-2012 archives (or their train/ and val/ folders beside the
    devkit)."""
    from hypernym.data import ilsvrc

    fs, path = open_fs(uri)
    if fs.isfile(path) and path.lower().endswith((".csv", ".jsonl")):
        return "csv" if path.lower().endswith(".csv") else "jsonl"
    if not fs.isdir(path):
        raise HypernymError(
            f"source {uri} does not exist or is not a directory: give a directory of "
            "nXXXXXXXX.tar files (winter21), of class folders, or a .csv/.jsonl of path,label"
        )
    entries = fs.ls(path, detail=True)
    names = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries}
    if names & {ilsvrc.TRAIN_TAR, ilsvrc.VAL_TAR, ilsvrc.DEVKIT, f"{ilsvrc.DEVKIT}.tar.gz"}:
        return "ilsvrc2012"
    tars = [e for e in entries if e["type"] == "file" and e["name"].endswith(".tar")]
    dirs = [e for e in entries if e["type"] == "directory"]
    if tars and not dirs:
        return "winter21"
    if dirs and not tars:
        return "folder"
    raise HypernymError(
        f"cannot tell the layout of {uri}: found {len(tars)} .tar files and {len(dirs)} folders. "
        "Expected one nXXXXXXXX.tar per synset (winter21) or one folder per class; set "
        "source_format explicitly"
    )


def list_source(uri: str, source_format: str = "auto", *, threads: int = 8,
                devkit: str | None = None) -> Listing:
    """List every image of the source, with per-reason counts of what was skipped.

    ``devkit``: the ILSVRC-2012 devkit (folder or .tar.gz) when it is not in the source.
    """
    fmt = detect_format(uri) if source_format == "auto" else source_format
    fs, path = open_fs(uri)
    if fmt in ("csv", "jsonl"):
        return _list_table(fs, path, fmt)
    if not fs.isdir(path):
        raise HypernymError(f"source {uri} does not exist or is not a directory")
    listing = Listing()
    if fmt == "ilsvrc2012":
        from hypernym.data.ilsvrc import list_ilsvrc

        listing.items, listing.val, listing.skipped = list_ilsvrc(uri, devkit, threads=threads)
        return listing
    if fmt == "winter21":
        tars = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".tar"))
        if not tars:
            raise HypernymError(f"{uri} holds no nXXXXXXXX.tar files (winter21 layout)")
        with ThreadPoolExecutor(threads) as pool:  # I/O bound: headers, many small reads
            for tar, (class_id, items, skipped) in zip(
                tars, pool.map(lambda t: _list_tar(fs, t), tars), strict=True
            ):
                _merge(listing, class_id, items, skipped, source=tar)
    else:
        classes = sorted(p for p in fs.ls(path, detail=False) if fs.isdir(p))
        if not classes:
            raise HypernymError(f"{uri} holds no class folders (folder-per-class layout)")
        for class_dir in classes:
            class_id, items, skipped = _list_folder(fs, class_dir)
            _merge(listing, class_id, items, skipped, source=class_dir)
    if not listing.items:
        raise HypernymError(f"{uri}: no images found ({dict(listing.skipped) or 'empty'})")
    return listing


def _merge(listing: Listing, class_id: str, items: list[Item], skipped: Counter, *,
           source: str) -> None:
    if items:
        listing.items[class_id] = items
    listing.skipped.update(skipped)
    if skipped:
        listing.skipped_sources[source] += sum(skipped.values())


def _list_tar(fs, tar_path: str, *, start: int = 0,
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
        items.append(Item(class_id, _key(stem), tar_path, member.offset_data, member.size))


def _list_folder(fs, class_dir: str) -> tuple[str, list[Item], Counter]:
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
        key = _key(class_id, stem)
        while key in seen:  # two names that sanitise alike
            key += "_"
        seen.add(key)
        items.append(Item(class_id, key, info["name"]))
    return class_id, items, skipped


def _list_table(fs, path: str, fmt: str) -> Listing:
    """A CSV (header ``path,label``) or JSONL ({"path", "label"}) of images. Relative paths are
    relative to the table's folder; absolute paths and s3:// URIs are taken as they are."""
    import csv
    import io
    import json

    if not fs.isfile(path):
        raise HypernymError(f"source table {path} does not exist")
    text = fs.cat_file(path).decode("utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if rows and not {"path", "label"} <= set(rows[0]):
        raise HypernymError(f"{path}: each row needs 'path' and 'label' (got {sorted(rows[0])})")
    base = path.rsplit("/", 1)[0]
    listing, seen = Listing(), set()
    for row in rows:
        src, label = str(row["path"]), str(row["label"])
        if "://" not in src and not src.startswith("/"):
            src = f"{base}/{src}"
        stem, _, ext = src.rsplit("/", 1)[-1].rpartition(".")
        if f".{ext.lower()}" not in IMAGE_EXTENSIONS:
            listing.skipped["not_an_image"] += 1
            listing.skipped_sources[path] += 1
            continue
        key = _key(label, stem)
        while key in seen:
            key += "_"
        seen.add(key)
        listing.items.setdefault(label, []).append(Item(label, key, src))
    if not listing.items:
        raise HypernymError(f"{path}: no image rows found")
    return listing


def read_item(fs, item: Item, handles: dict) -> bytes:
    """The raw bytes of one item (tar handles are cached per task in ``handles``)."""
    if "://" in item.source:  # a table row may point at another store than the table itself
        other, path = open_fs(item.source)
        return other.cat_file(path)
    if item.offset < 0:
        return fs.cat_file(item.source)
    fh = handles.get(item.source)
    if fh is None:
        fh = handles[item.source] = fs.open(item.source, "rb")
    fh.seek(item.offset)
    data = fh.read(item.size)
    if len(data) != item.size:
        raise EOFError("member truncated")
    return data

