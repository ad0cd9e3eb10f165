"""Listings of annotated sources: the class vocabulary and split grouping that VOC, COCO and
multi-label tables share, and ImageNet's own boxes joined to a winter21 or ILSVRC-2012 listing.

ImageNet's boxes come as PASCAL VOC XML, one file per image, named after it: the ILSVRC-2012
archives ``ILSVRC2012_bbox_train_v2.tar.gz`` (``nXXXXXXXX/nXXXXXXXX_N.xml``) and
``ILSVRC2012_bbox_val_v3.tgz`` (``val/ILSVRC2012_val_XXXXXXXX.xml``), and the full release's
per-synset ``Annotation/nXXXXXXXX.tar.gz``. Any of these, a folder of them, or a folder of the
extracted XML files is read in place (archives inside archives too), from local paths or s3://.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from hypernym.data.boxes import AnnotationStats, ImageAnnotation, parse_voc_xml
from hypernym.data.listing import Item, Listing
from hypernym.data.storage import open_fs
from hypernym.errors import HypernymError

__all__ = ["annotation_summary", "is_multi_label", "join_boxes", "vocabulary_listing"]

_ARCHIVES = (".tar.gz", ".tgz", ".tar")


def vocabulary_listing(train: list[tuple[Item, ImageAnnotation]],
                       val: list[tuple[Item, ImageAnnotation]], *,
                       classes: list[str] | None = None, skipped: Counter | None = None) -> Listing:
    """A listing whose classes are the labels (``classes``, or every label found, sorted).

    Items are grouped by their rarest label (fewest images in the source; "" for an image
    without labels): prepare holds out ``val_per_class`` images per group when ``val`` is empty,
    so that rare labels reach the validation split too.
    """
    pairs = train + val
    if not pairs:
        raise HypernymError("the source lists no images")
    counts = Counter(label for _, ann in pairs for label in ann.labels)
    classes = sorted(counts) if classes is None else classes
    unknown = sorted(set(counts) - set(classes))
    if unknown:
        raise HypernymError(f"labels {unknown[:5]} are not among the source's classes")
    listing = Listing(annotated=True, classes=classes, annotation_skipped=Counter(skipped))
    for target, part in ((listing.items, train), (listing.val, val)):
        for item, ann in part:
            group = min(ann.labels, key=lambda c: (counts[c], c)) if ann.labels else ""
            target.setdefault(group, []).append(dataclasses.replace(item, class_id=group))
            listing.annotations[item.key] = ann
    return listing


def join_boxes(listing: Listing, uris: list[str], *, threads: int = 8) -> Counter:
    """Attach the boxes in ``uris`` to the listing's images, by image name. Images without a
    box file stay, with no boxes. Returns counts for the manifest's stats (box files read, and
    those that name no image of the listing).

    Raises:
        HypernymError: a box location does not exist, or the listing is not single-label.
    """
    if listing.classes is not None:
        raise HypernymError("boxes: are joined to single-label sources (winter21, ilsvrc2012, "
                            "class folders); this source carries its own annotations")
    by_name = {item.name or item.key: item for part in (listing.items, listing.val)
               for items in part.values() for item in items}
    counts: Counter = Counter()
    for uri in uris:
        for stem, ann in _read_xml_files(uri, by_name, counts, listing.annotation_skipped,
                                         threads=threads):
            item = by_name[stem]
            if item.key in listing.annotations:
                listing.annotation_skipped["duplicate"] += 1  # the first read wins
                continue
            listing.annotations[item.key] = ImageAnnotation((item.class_id,), ann.boxes,
                                                            ann.size)
    listing.annotated = True
    return counts


def is_multi_label(listing: Listing, plan: dict[str, list[list[Item]]]) -> bool:
    """Whether some planned image of an annotated listing has other than one label (its
    samples then have no ``cls``: every sample of a dataset has one, or none has)."""
    if not listing.annotated:
        return False
    for shards in plan.values():
        for items in shards:
            for item in items:
                found = listing.annotations.get(item.key)
                if len(found.labels if found else (item.class_id,)) != 1:
                    return True
    return False


def annotation_summary(listing: Listing, results: dict, jobs, class_ids: list[str], *,
                       multi_label: bool) -> dict:
    """The manifest's ``stats.annotations``: per split (``jobs``: (split, shard name, items)),
    images with boxes, boxes and images per class, and the label cardinality, from the shard
    tasks' ``results`` (by shard name)."""
    splits = {}
    for split in dict.fromkeys(s for s, _, _ in jobs):
        total = AnnotationStats()
        for s, name, _ in jobs:
            if s == split and results[name].annotations is not None:
                total.merge(results[name].annotations)
        splits[split] = total.summary(class_ids)
    return {"multi_label": multi_label, "box_format": "xyxy, stored image pixels",
            **dict(listing.annotation_stats), "splits": splits}


def _read_xml_files(uri: str, wanted: dict, counts: Counter, skipped: Counter, *,
                    threads: int) -> Iterator[tuple[str, ImageAnnotation]]:
    """(stem, annotation) of every .xml in ``uri`` (a file, archive or folder) whose stem is in
    ``wanted``; the others are only counted."""
    fs, path = open_fs(uri)
    if fs.isdir(path):
        files = sorted(f for f in fs.find(path) if f.endswith((".xml", *_ARCHIVES)))
        if not files:
            raise HypernymError(f"boxes: {uri} holds no .xml files and no box archives")
    elif fs.isfile(path):
        files = [path]
    else:
        raise HypernymError(f"boxes: {uri} does not exist (give a box archive such as "
                            "ILSVRC2012_bbox_train_v2.tar.gz, an Annotation folder, or a folder "
                            "of .xml files)")

    def read(file: str) -> tuple[list, Counter, Counter]:
        found, seen, bad = [], Counter(), Counter()  # per thread: Counters are not atomic
        try:
            if file.endswith(".xml"):
                members = [(_stem(file), fs.cat_file(file))]
            else:
                fh = fs.open(file, "rb")
                members = _archive_members(fh, bad)
            for stem, data in members:
                seen["box_files"] += 1
                if stem not in wanted:
                    seen["box_files_without_image"] += 1
                    continue
                try:
                    found.append((stem, parse_voc_xml(data, bad)))
                except ValueError:
                    bad["unreadable"] += 1
        except (OSError, EOFError, tarfile.TarError, zlib.error):
            bad["unreadable"] += 1  # the rest of this archive or file
        return found, seen, bad

    with ThreadPoolExecutor(threads) as pool:  # I/O bound: many small reads on S3
        for start in range(0, len(files), 4 * threads):  # bounded: parsed results, not bytes
            for found, seen, bad in pool.map(read, files[start : start + 4 * threads]):
                counts.update(seen)
                skipped.update(bad)
                yield from found


def _archive_members(fh, skipped: Counter) -> Iterator[tuple[str, bytes]]:
    """(stem, bytes) of each .xml in a tar(.gz), nested archives included (the full release's
    per-synset archives may come bundled in one). Read as a stream: no seeks on S3."""
    with fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name.endswith(".xml"):
                yield _stem(member.name), data
            elif member.name.endswith(_ARCHIVES):
                try:
                    yield from list(_archive_members(io.BytesIO(data), skipped))
                except (OSError, EOFError, tarfile.TarError, zlib.error):
                    skipped["unreadable"] += 1


def _stem(name: str) -> str:
    return name.rsplit("/", 1)[-1].removesuffix(".xml")
