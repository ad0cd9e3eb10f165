"""The teacher store on disk: sidecar files beside a dataset's shards, and a manifest.

A store is a directory (local or ``s3://``) holding one sidecar per dataset shard,
``<shard name without .tar>.safetensors``, and ``store.json``, written last (a directory without
it is not a store). A sidecar holds, for every sample of its shard in tar order (the sample
keys are in its metadata):

- training shards, for each of the N views: ``box`` uint16 [n, N, 4] (top, left, height, width as
  fractions of the image, `hypernym.train.distill.views`), ``flip`` uint8 [n, N];
- for each view (one, the evaluation crop, on the other splits) and each *level* (the whole class
  list for ``kl``; each semantic level for the semantic losses): the teacher's top-K
  probabilities ``prob`` fp16 [n, N, S] with their class indices ``cls`` (uint16 when the classes
  fit, else int32) [n, N, S], where S sums min(K, classes of the level) over the levels, and the
  probability mass left outside the top-K, ``rest`` fp16 [n, N, L];
- for the semantic kind, the teacher's confidence per level ``conf`` fp16 [n, N, L] (MIIL's top
  5% of a level, more than K classes on a big level);
- on the other splits, the teacher's top-1 class over all its logits ``top1`` [n, 1] (what
  validation compares the student's top-1 with).

A student replays the full distribution of a level as its top-K probabilities with the rest
spread evenly over the level's other classes (ml-dr's ``densify(..., "smooth")``). safetensors
holds no code: loading a store never unpickles anything.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from hypernym.data.storage import is_remote, join, open_fs
from hypernym.errors import HypernymError

__all__ = ["STORE_MANIFEST", "Sidecar", "SidecarInfo", "StoreManifest", "decode_sidecar",
           "encode_sidecar", "level_layout", "read_store_manifest", "sidecar_name",
           "write_store_manifest"]

STORE_MANIFEST = "store.json"
FORMAT_VERSION = 1


class SidecarInfo(BaseModel):
    """One sidecar: the dataset shard it goes with, its samples, bytes and sha256."""

    shard: str
    name: str
    samples: int
    bytes: int
    sha256: str


class StoreManifest(BaseModel):
    """What a teacher store holds and where it came from (``store.json``).

    Attributes:
        kind: ``flat`` (one level: the whole class list; for ``kl``) or ``semantic`` (each
            semantic level, with the teacher's confidence; for ``semantic`` and
            ``semantic_kl``).
        teacher: the teacher's registry reference, pinned (``NAME/VERSION``).
        levels: the class indices of each level (one level of every class for ``flat``).
        topk: per level, the probabilities kept (min(K, the level's classes)).
        views: augmentation views per training image (N).
        bytes_per_view: a training view's share of the sidecars' array bytes, measured.
        fingerprint: the store's identity in lineage (teacher, dataset, settings, sidecars).
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    kind: Literal["flat", "semantic"]
    teacher: str
    teacher_arch: str
    teacher_sha256: str
    teacher_input_size: int
    dataset: str
    dataset_fingerprint: str
    num_classes: int
    levels: list[list[int]]
    topk: list[int]
    views: int
    crop_scale: tuple[float, float]
    seed: int
    class_dtype: Literal["uint16", "int32"]
    bytes_per_view: float
    sidecars: dict[str, list[SidecarInfo]]
    stats: dict[str, float] = Field(default_factory=dict)
    fingerprint: str
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def sidecar_for(self, shard: str) -> tuple[str, SidecarInfo]:
        """(split, sidecar) of a dataset shard's name."""
        for split, infos in self.sidecars.items():
            for info in infos:
                if info.shard == shard:
                    return split, info
        raise HypernymError(f"the teacher store has no sidecar for shard {shard}: it was "
                            "written for another dataset; write a new store")


def sidecar_name(shard: str) -> str:
    """``train-000001.tar`` -> ``train-000001.safetensors``."""
    return shard.removesuffix(".tar") + ".safetensors"


class Sidecar:
    """One shard's stored views, loaded: arrays by name, and each sample key's row."""

    def __init__(self, arrays: dict[str, np.ndarray], keys: list[str]) -> None:
        self.arrays, self.rows = arrays, {key: i for i, key in enumerate(keys)}

    def row(self, key: str) -> int:
        """The sample's row. Raises ValueError (the reader skips and counts the sample) for a
        sample the store has no answer for: its image did not decode when the store was
        written (the store and the dataset are matched by the dataset's fingerprint)."""
        try:
            return self.rows[key]
        except KeyError:
            raise ValueError(f"sample {key} has no stored teacher answer (its image did not "
                             "decode when the store was written)") from None


def encode_sidecar(arrays: dict[str, np.ndarray], keys: list[str], *, shard: str) -> bytes:
    """safetensors bytes of a shard's arrays, its sample keys in the metadata."""
    from safetensors.numpy import save

    return save(arrays, metadata={"keys": json.dumps(keys), "shard": shard})


def decode_sidecar(data: bytes) -> Sidecar:
    """A sidecar's arrays and sample keys from its bytes."""
    from safetensors.numpy import load

    # safetensors.numpy.load gives the arrays only, and safe_open (which reads the metadata)
    # wants a file: the metadata is the "__metadata__" entry of the JSON header that follows
    # the format's 8-byte little-endian header length.
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    return Sidecar(load(data), json.loads(header["__metadata__"]["keys"]))


def read_store_manifest(uri: str) -> StoreManifest:
    """``<uri>/store.json``.

    Raises:
        HypernymError: no such directory, or no ``store.json`` (not a finished store).
    """
    fs, path = open_fs(uri)
    target = join(path, STORE_MANIFEST)
    if not fs.exists(target):
        what = "does not exist" if not fs.exists(path) else f"has no {STORE_MANIFEST}"
        raise HypernymError(f"{uri} {what}: not a finished teacher store (its manifest is "
                            "written last). Write one with `hypernym distill store TEACHER "
                            "DATASET --views N --topk K --out DIR`")
    return StoreManifest.model_validate_json(fs.cat_file(target))


def write_store_manifest(uri: str, manifest: StoreManifest) -> None:
    """Write ``store.json`` last, never half-written (one PUT on S3, a rename on disk)."""
    fs, path = open_fs(uri)
    data = manifest.model_dump_json(indent=2).encode()
    if is_remote(uri):
        fs.pipe_file(join(path, STORE_MANIFEST), data)
        return
    tmp = join(path, f".{STORE_MANIFEST}.tmp")
    fs.pipe_file(tmp, data)
    fs.mv(tmp, join(path, STORE_MANIFEST))


def level_layout(levels: list[list[int]], topk: list[int], num_classes: int):
    """Per class column: its level (-1: in none) and the number of classes sharing the level's
    rest (the level's classes outside its top-K; at least 1)."""
    level_of = torch.full((num_classes,), -1, dtype=torch.long)
    tail = torch.ones(num_classes)
    for index, (members, k) in enumerate(zip(levels, topk, strict=True)):
        level_of[members] = index
        tail[members] = float(max(len(members) - k, 1))
    return level_of, tail
