"""A prepared dataset at a glance: its manifest's summary and a contact sheet of samples."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from hypernym.data.manifest import Manifest, read_manifest
from hypernym.data.reader import read_shard

__all__ = ["contact_sheet", "summary"]


def summary(manifest: Manifest) -> dict:
    """Counts a user checks first: classes, samples, shards and bytes per split, drops."""
    splits = {split: {"shards": len(shards), "samples": sum(s.samples for s in shards),
                      "bytes": sum(s.bytes for s in shards)}
              for split, shards in manifest.splits.items()}
    return {"name": manifest.name, "classes": len(manifest.classes), "splits": splits,
            "dropped": manifest.dropped, "fingerprint": manifest.fingerprint,
            "hierarchy": (manifest.hierarchy or {}).get("kind", "none"),
            "recipe": manifest.recipe.get("params", {})}


def contact_sheet(uri: str, out: str | Path, *, classes: int = 16, per_class: int = 6,
                  cell: int = 96, split: str = "train") -> Path:
    """A PNG grid: one row per class (its name on the left), ``per_class`` samples each."""
    manifest = read_manifest(uri)
    wanted = {c.index: c for c in manifest.classes[:classes]}
    found: dict[int, list[bytes]] = {i: [] for i in wanted}
    for url in manifest.shard_urls(uri, split):
        for jpg, label in read_shard(url):
            if label in found and len(found[label]) < per_class:
                found[label].append(jpg)
        if all(len(v) == per_class for v in found.values()):
            break  # reads only as many shards as the sheet needs
    label_w = 160
    sheet = Image.new("RGB", (label_w + per_class * cell, len(wanted) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (index, info) in enumerate(sorted(wanted.items())):
        draw.text((4, row * cell + cell // 2 - 6), f"{index}: {info.name}"[:24], fill="black")
        for col, jpg in enumerate(found[index]):
            image = Image.open(io.BytesIO(jpg)).convert("RGB")
            image.thumbnail((cell - 4, cell - 4))
            sheet.paste(image, (label_w + col * cell + 2, row * cell + 2))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
