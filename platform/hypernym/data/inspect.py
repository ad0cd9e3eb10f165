"""A prepared dataset at a glance: its manifest's summary and a contact sheet of samples (with
their boxes and labels drawn, in an annotated dataset)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

from PIL import Image, ImageDraw

from hypernym.data.manifest import Manifest, read_manifest
from hypernym.data.storage import open_fs
from hypernym.data.tar import iter_tar

__all__ = ["contact_sheet", "summary"]


def summary(manifest: Manifest) -> dict:
    """Counts a user checks first: classes, samples, shards and bytes per split, drops."""
    splits = {split: {"shards": len(shards), "samples": sum(s.samples for s in shards),
                      "bytes": sum(s.bytes for s in shards)}
              for split, shards in manifest.splits.items()}
    return {"name": manifest.name, "classes": len(manifest.classes), "splits": splits,
            "dropped": manifest.dropped, "fingerprint": manifest.fingerprint,
            "hierarchy": (manifest.hierarchy or {}).get("kind", "none"),
            "recipe": manifest.recipe.get("params", {}),
            "annotations": manifest.stats.get("annotations")}


def contact_sheet(uri: str, out: str | Path, *, classes: int = 16, per_class: int = 6,
                  cell: int = 96, split: str = "train") -> Path:
    """A PNG grid: one row per class (its name on the left), ``per_class`` samples each.

    In an annotated dataset a row shows samples that have the class among their labels, with
    every box drawn in its class's colour and numbered with its class index, and the sample's
    labels written under it.
    """
    manifest = read_manifest(uri)
    annotated = "annotations" in manifest.stats
    wanted = {c.index: c for c in manifest.classes[:classes]}
    found: dict[int, list[tuple[bytes, dict]]] = {i: [] for i in wanted}
    for url in manifest.shard_urls(uri, split):
        for jpg, labels, meta in _samples(url):
            for label in labels:
                if label in found and len(found[label]) < per_class:
                    found[label].append((jpg, meta))
        if all(len(v) == per_class for v in found.values()):
            break  # reads only as many shards as the sheet needs
    label_w = 160
    sheet = Image.new("RGB", (label_w + per_class * cell, len(wanted) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (index, info) in enumerate(sorted(wanted.items())):
        draw.text((4, row * cell + cell // 2 - 6), f"{index}: {info.name}"[:24], fill="black")
        for col, (jpg, meta) in enumerate(found[index]):
            image = Image.open(io.BytesIO(jpg)).convert("RGB")
            scale = min((cell - 4) / image.width, (cell - 4) / image.height, 1.0)
            image.thumbnail((cell - 4, cell - 4))
            if annotated:
                _draw_annotation(image, meta, scale)
            sheet.paste(image, (label_w + col * cell + 2, row * cell + 2))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


# Box colours by class index (Tableau's ten, as matplotlib's tab10 has them).
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]


def _draw_annotation(image: Image.Image, meta: dict, scale: float) -> None:
    draw = ImageDraw.Draw(image)
    for box in meta.get("boxes", []):
        colour = _PALETTE[box["class"] % len(_PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in box["box"])
        draw.rectangle([x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)], outline=colour, width=2)
        draw.text((x0 + 2, y0 + 1), str(box["class"]), fill=colour)
    labels = ",".join(str(c) for c in meta.get("labels", []))
    draw.text((2, image.height - 11), labels[:16], fill="white", stroke_width=1,
              stroke_fill="black")


def _samples(url: str):
    """(jpg bytes, labels, json dict) of each sample of a shard, with or without ``cls``."""
    fs, path = open_fs(url)
    key, fields = None, {}
    with fs.open(path, "rb") as fh:
        # A sentinel member after the last flushes the last sample.
        for member, data in itertools.chain(iter_tar(fh, name=url), [("", b"")]):
            base, _, ext = member.partition(".")
            if base != key:
                if "jpg" in fields:
                    meta = json.loads(fields.get("json", b"{}"))
                    labels = meta.get("labels") or ([int(fields["cls"])] if "cls" in fields
                                                    else [])
                    yield fields["jpg"], labels, meta
                key, fields = base, {}
            fields[ext] = data
