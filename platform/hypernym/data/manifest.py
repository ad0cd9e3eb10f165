"""The dataset contract: a directory of ``*.tar`` WebDataset shards plus ``manifest.json``.

The manifest is written last: a directory without one is not a dataset (docs/architecture.md).
Its fingerprint (recipe, classes, shard hashes) is the dataset's identity in lineage.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hypernym.data.storage import is_remote, join, open_fs
from hypernym.errors import HypernymError

__all__ = [
    "MANIFEST",
    "ClassInfo",
    "Manifest",
    "ShardInfo",
    "fingerprint",
    "read_manifest",
    "write_manifest",
    "write_timm_info",
]

MANIFEST = "manifest.json"
_UNUSED_WHEN_EMPTY = ("boxes", "label_separator")
TIMM_INFO = "_info.json"
FORMAT_VERSION = 1


class ShardInfo(BaseModel):
    name: str
    samples: int
    bytes: int
    sha256: str


class ClassInfo(BaseModel):
    index: int
    id: str  # a WordNet synset id (winter21) or the folder name
    name: str  # human-readable lemma


class Manifest(BaseModel):
    """What a prepared dataset holds; see docs/datasets.md ("Output")."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    recipe: dict[str, Any]
    classes: list[ClassInfo]
    hierarchy: dict[str, Any] | None = None
    splits: dict[str, list[ShardInfo]]
    dropped: dict[str, int] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)  # e.g. class mixing per split
    fingerprint: str

    def num_samples(self, split: str) -> int:
        return sum(s.samples for s in self.splits.get(split, []))

    def shard_urls(self, root: str, split: str) -> list[str]:
        return [join(root, s.name) for s in self.splits.get(split, [])]


def fingerprint(recipe: dict[str, Any], class_ids: list[str], shards: list[ShardInfo]) -> str:
    """sha256 over what defines the data: recipe, classes, shard contents (not times or paths)."""
    stable = {k: v for k, v in recipe.items()
              if k not in ("source", "output", "overwrite", "devkit")  # where, not what
              # keys a recipe leaves unused: a dataset keeps the identity it had before them
              and not (k in _UNUSED_WHEN_EMPTY and v in (None, []))}
    payload = json.dumps(
        {"recipe": stable, "classes": class_ids, "shards": [(s.name, s.sha256) for s in shards]},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def write_timm_info(uri: str, manifest: Manifest) -> None:
    """``_info.json`` for timm's WebDataset reader (``timm.data.create_dataset("wds/...")``),
    which takes split sizes and shard lists from it: a timm train.py user trains on these shards
    with ``--dataset wds/NAME --data-dir URI``."""
    fs, path = open_fs(uri)
    splits = {
        split: {"name": split, "num_samples": manifest.num_samples(split),
                "filenames": [s.name for s in shards],
                "shard_lengths": [s.samples for s in shards]}
        for split, shards in manifest.splits.items()
    }
    info = {"name": manifest.name, "num_classes": len(manifest.classes), "splits": splits}
    with fs.open(join(path, TIMM_INFO), "wb") as fh:
        fh.write(json.dumps(info, indent=2).encode())


def read_manifest(uri: str) -> Manifest:
    """Load ``<uri>/manifest.json``.

    Raises:
        HypernymError: the path does not exist or holds no manifest (not a finished dataset).
    """
    fs, path = open_fs(uri)
    target = join(path, MANIFEST)
    if not fs.exists(target):
        what = "does not exist" if not fs.exists(path) else "has no manifest.json"
        raise HypernymError(
            f"{uri} {what}: not a hypernym dataset (a dataset is shards + manifest.json, written "
            "when preparation finishes). "
            "Run `hypernym prepare --source RAW --output DIR` first and point data.path at DIR."
        )
    with fs.open(target, "rb") as fh:
        return Manifest.model_validate_json(fh.read())


def write_manifest(uri: str, manifest: Manifest) -> None:
    """Write ``<uri>/manifest.json`` so that it is never seen half-written.

    Local disks: a temporary file renamed into place. Object stores: one PUT, which is atomic
    (a rename there would be a copy plus a delete, and leave a second object behind on a crash).
    """
    fs, path = open_fs(uri)
    data = manifest.model_dump_json(indent=2).encode()
    if is_remote(uri):
        fs.pipe_file(join(path, MANIFEST), data)
        return
    tmp = join(path, f".{MANIFEST}.tmp")
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
    fs.mv(tmp, join(path, MANIFEST))
