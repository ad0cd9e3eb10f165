"""Table sources: a CSV (with a header) or JSONL file, one image per row.

Every row has ``path``: relative to the table's folder, absolute, or an s3:// URI. Then either

- ``label``: the image's one class (a single-label dataset, as a folder per class gives); or
- several labels: ``labels`` as a JSON list (JSONL), or a string the recipe's
  ``label_separator`` splits (``labels`` or ``label``, CSV or JSONL). Such a table is
  multi-label: its classes are every label found, and an image may have none.

A multi-label table may add ``split`` (``train`` or ``val``; empty means train): when any row
says ``val``, those rows are the validation split and ``val_per_class`` does not apply. A JSONL
row may also carry ``boxes``: ``[{"label": "cat", "box": [x0, y0, x1, y1], "flags": [...]}]`` in
the source image's pixels (0 at the left edge, data/boxes.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

from hypernym.data.annotated import vocabulary_listing
from hypernym.data.boxes import FLAGS, ImageAnnotation, ObjectBox, check_box
from hypernym.data.listing import IMAGE_EXTENSIONS, Item, Listing, sample_key
from hypernym.errors import HypernymError

__all__ = ["list_table"]


def list_table(fs, path: str, fmt: str, *, label_separator: str | None = None) -> Listing:
    """The listing of a CSV or JSONL table (``fmt``: ``csv`` or ``jsonl``)."""
    if not fs.isfile(path):
        raise HypernymError(f"source table {path} does not exist")
    text = fs.cat_file(path).decode("utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise HypernymError(f"{path} line {exc.doc[:40]!r}...: not JSON ({exc.msg}); a "
                                "JSONL table holds one JSON object per line") from None
    if not rows:
        raise HypernymError(f"{path}: no image rows found")
    columns = set(rows[0])
    if "path" not in columns or not columns & {"label", "labels"}:
        raise HypernymError(f"{path}: each row needs 'path' and 'label' (or 'labels' for several"
                            f" labels per image) (got {sorted(columns)})")
    if label_separator is None and "labels" not in columns:
        return _single_label(rows, path)
    if fmt == "csv" and label_separator is None:
        raise HypernymError(f"{path}: the 'labels' column of a CSV needs the recipe's "
                            "label_separator (e.g. --set label_separator='|')")
    return _multi_label(rows, path, fmt, label_separator)


def _image_path(row: dict, base: str) -> tuple[str, str] | None:
    """(the image's path, its file stem), or None when the row is not an image."""
    src = str(row["path"])
    if "://" not in src and not src.startswith("/"):
        src = f"{base}/{src}"
    stem, _, ext = src.rsplit("/", 1)[-1].rpartition(".")
    return (src, stem) if f".{ext.lower()}" in IMAGE_EXTENSIONS else None


def _single_label(rows: list[dict], path: str) -> Listing:
    base = path.rsplit("/", 1)[0]
    listing, seen = Listing(), set()
    for row in rows:
        label = str(row["label"])
        found = _image_path(row, base)
        if found is None:
            listing.skipped["not_an_image"] += 1
            listing.skipped_sources[path] += 1
            continue
        key = _unique(sample_key(label, found[1]), seen)
        listing.items.setdefault(label, []).append(Item(label, key, found[0], name=found[1]))
    if not listing.items:
        raise HypernymError(f"{path}: no image rows found")
    return listing


def _multi_label(rows: list[dict], path: str, fmt: str, separator: str | None) -> Listing:
    base = path.rsplit("/", 1)[0]
    splits: dict[str, list] = {"train": [], "val": []}
    skipped, bad, seen = Counter(), Counter(), set()
    for n, row in enumerate(rows, 2 if fmt == "csv" else 1):
        found = _image_path(row, base)
        if found is None:
            bad["not_an_image"] += 1
            continue
        split = str(row.get("split") or "train").strip()
        if split not in splits:
            raise HypernymError(f"{path} row {n}: split is {split!r}; use train or val (or "
                                "leave it empty for train)")
        labels = _labels(row, separator, path, n)
        boxes = [b for b in (_box(raw, skipped) for raw in row.get("boxes") or []) if b]
        key = _unique(sample_key(found[1]), seen)
        item = Item("", key, found[0], name=found[1])
        splits[split].append((item, ImageAnnotation.of(boxes, labels=labels)))
    if not splits["train"] and not splits["val"]:
        raise HypernymError(f"{path}: no image rows found")
    # No val rows: prepare holds out val_per_class images per label group.
    listing = vocabulary_listing(splits["train"], splits["val"], skipped=skipped)
    listing.skipped.update(bad)
    if bad:
        listing.skipped_sources[path] += sum(bad.values())
    return listing


def _labels(row: dict, separator: str | None, path: str, n: int) -> list[str]:
    value = row.get("labels", row.get("label"))
    if isinstance(value, list):
        labels = [str(v) for v in value]
    elif value is None or value == "":
        labels = []
    elif separator is None:
        raise HypernymError(f"{path} row {n}: 'labels' is {value!r}, not a list: give a JSON "
                            "list, or set the recipe's label_separator")
    else:
        labels = str(value).split(separator)
    return sorted({label.strip() for label in labels if label.strip()})


def _box(raw, skipped: Counter) -> ObjectBox | None:
    """A JSONL row's box, or None (counted) when it is malformed."""
    if not isinstance(raw, dict) or not raw.get("label") or "box" not in raw:
        skipped["box_malformed"] += 1
        return None
    box, reason = check_box(raw["box"] if isinstance(raw["box"], list) else None, None)
    if reason:
        skipped[reason] += 1
        return None
    flags = tuple(f for f in raw.get("flags") or () if f in FLAGS)
    return ObjectBox(str(raw["label"]), box, flags)


def _unique(key: str, seen: set[str]) -> str:
    while key in seen:  # two names that sanitise alike
        key += "_"
    seen.add(key)
    return key
