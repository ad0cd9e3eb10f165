"""A prepared dataset, opened once: where it is and what its manifest says.

A run reads its dataset's manifest once, in the driver, and passes the `Dataset` to everything
that needs it (the budget rule, the task, the reader, registration, the evaluation report);
each Ray Train worker opens it once for itself. The manifest's fingerprint is the dataset's
identity in lineage (docs/architecture.md, "Principles").
"""

from __future__ import annotations

from dataclasses import dataclass

from hypernym.data.manifest import ClassInfo, Manifest, read_manifest

__all__ = ["Dataset", "open_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A dataset directory (a local path or ``s3://`` URI) and its manifest.

    Attributes:
        root: the directory holding the shards and ``manifest.json``.
        manifest: its parsed manifest.
    """

    root: str
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def classes(self) -> list[ClassInfo]:
        return self.manifest.classes

    @property
    def class_ids(self) -> list[str]:
        return [c.id for c in self.manifest.classes]

    def num_samples(self, split: str) -> int:
        return self.manifest.num_samples(split)

    def shard_urls(self, split: str) -> list[str]:
        return self.manifest.shard_urls(self.root, split)


def open_dataset(root: str) -> Dataset:
    """Read ``root``'s manifest once.

    Raises:
        HypernymError: ``root`` does not exist or holds no manifest (not a finished dataset).
    """
    return Dataset(root=str(root), manifest=read_manifest(str(root)))
