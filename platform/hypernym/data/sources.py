"""Raw image sources: the winter21 release (one tar per synset), a folder per class, a table of
paths (tables.py), the ILSVRC-2012 release (ilsvrc.py), and the annotated layouts: PASCAL VOC
(voc.py), COCO (coco.py), and ImageNet's own boxes joined to a winter21 or ILSVRC-2012 listing
(annotated.py).

Listing records, for every image, where its bytes are: a plain file, or an offset and size inside
a source tar, so that a shard writer reads one member with a seek instead of re-reading the tar.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from hypernym.data.listing import IMAGE_EXTENSIONS, Item, Listing, list_folder, list_tar
from hypernym.data.storage import open_fs
from hypernym.errors import HypernymError

__all__ = ["IMAGE_EXTENSIONS", "Item", "Listing", "detect_format", "list_source", "read_item"]


def detect_format(uri: str) -> str:
    """``winter21`` for a directory of nXXXXXXXX.tar files, ``folder`` for class folders,
    ``ilsvrc2012`` for the ILSVRC-2012 archives (or their train/ and val/ folders beside the
    devkit), ``voc`` and ``coco`` for those layouts, ``csv``/``jsonl`` for a table."""
    from hypernym.data import ilsvrc
    from hypernym.data.coco import coco_files
    from hypernym.data.voc import is_voc

    fs, path = open_fs(uri)
    if fs.isfile(path) and path.lower().endswith((".csv", ".jsonl")):
        return "csv" if path.lower().endswith(".csv") else "jsonl"
    if not fs.isdir(path):
        raise HypernymError(
            f"source {uri} does not exist or is not a directory: give a directory of "
            "nXXXXXXXX.tar files (winter21), of class folders, a VOC or COCO layout, or a "
            ".csv/.jsonl of path,label"
        )
    entries = fs.ls(path, detail=True)
    names = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries}
    if names & {ilsvrc.TRAIN_TAR, ilsvrc.VAL_TAR, ilsvrc.DEVKIT, f"{ilsvrc.DEVKIT}.tar.gz"}:
        return "ilsvrc2012"
    if is_voc(names):
        return "voc"
    if "annotations" in names and coco_files(fs, path):
        return "coco"
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
                devkit: str | None = None, label_separator: str | None = None,
                boxes: list[str] | tuple[str, ...] = ()) -> Listing:
    """List every image of the source, with per-reason counts of what was skipped.

    ``devkit``: the ILSVRC-2012 devkit (folder or .tar.gz) when it is not in the source.
    ``label_separator``: splits a table's labels (a multi-label table). ``boxes``: ImageNet box
    archives or folders, joined to a winter21, ILSVRC-2012 or class-folder listing by image name
    (the counts of what was read go to ``listing.annotation_stats``).
    """
    fmt = detect_format(uri) if source_format == "auto" else source_format
    listing = _list(uri, fmt, threads=threads, devkit=devkit, label_separator=label_separator)
    if boxes:
        from hypernym.data.annotated import join_boxes

        listing.annotation_stats.update(join_boxes(listing, list(boxes), threads=threads))
    return listing


def _list(uri: str, fmt: str, *, threads: int, devkit: str | None,
          label_separator: str | None) -> Listing:
    fs, path = open_fs(uri)
    if fmt in ("csv", "jsonl"):
        from hypernym.data.tables import list_table

        return list_table(fs, path, fmt, label_separator=label_separator)
    if not fs.isdir(path):
        raise HypernymError(f"source {uri} does not exist or is not a directory")
    if fmt == "voc":
        from hypernym.data.voc import list_voc

        return list_voc(uri, threads=threads)
    if fmt == "coco":
        from hypernym.data.coco import list_coco

        return list_coco(uri)
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
                tars, pool.map(lambda t: list_tar(fs, t), tars), strict=True
            ):
                _merge(listing, class_id, items, skipped, source=tar)
    else:
        classes = sorted(p for p in fs.ls(path, detail=False) if fs.isdir(p))
        if not classes:
            raise HypernymError(f"{uri} holds no class folders (folder-per-class layout)")
        for class_dir in classes:
            class_id, items, skipped = list_folder(fs, class_dir)
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

