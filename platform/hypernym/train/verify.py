"""Checkpoints that prove themselves: a manifest of their files, written last, checked before use.

A checkpoint directory is *whole* when its ``checkpoint_manifest.json`` exists and every file it
lists is there with the listed size and sha256. The manifest is the last file a checkpoint
writes, so a checkpoint cut short (a failed upload, a lost node), truncated or damaged in
storage, or missing a file fails the check, with what failed. Ray Train keeps no such record: it
restores whatever checkpoint its snapshot names, and a damaged file would surface as a
deserialization error inside every worker.

The same check runs on a local directory and on run storage (any fsspec filesystem), so a
restore verifies the copy it is about to load and ``hypernym runs show`` can verify a checkpoint
where it lies.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypernym.errors import HypernymError

__all__ = ["INDEX_FILE", "MANIFEST_FILE", "SNAPSHOT_FILE", "CheckpointDamaged", "ManifestInfo",
           "check_checkpoint", "read_manifest", "recorded_in", "recorded_names",
           "verify_checkpoint", "write_manifest"]

MANIFEST_FILE = "checkpoint_manifest.json"
# Ray Train V2's record of a run's checkpoints, in the run's directory beside them.
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
# A one-process run's record of its checkpoints (`hypernym.train.checkpointing`): their names,
# oldest first.
INDEX_FILE = "checkpoints.json"
FORMAT = 1
_CHUNK = 8 * 1024 * 1024


class CheckpointDamaged(HypernymError):
    """A checkpoint whose manifest is missing or whose files do not match it."""


@dataclass(frozen=True)
class ManifestInfo:
    """Where a checkpoint stood: its optimizer step, the epochs done, and when it was
    written."""

    step: int
    epoch: int  # epochs completed (a mid-epoch checkpoint is inside epoch ``epoch + 1``)
    written: float  # seconds since the epoch (UTC)
    files: dict[str, dict[str, Any]]


def _sha256(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: str | Path, *, step: int, epoch: int) -> Path:
    """Record every file of ``directory`` (size, sha256) with the checkpoint's position.

    Call it last, once every other file is written: the manifest's presence is what says the
    checkpoint is complete. It is written to a temporary name and renamed, so it is never seen
    half-written.
    """
    directory = Path(directory)
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != MANIFEST_FILE and not path.name.startswith("."):
            with path.open("rb") as stream:
                files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(stream)}
    body = {"format": FORMAT, "global_step": int(step), "epoch": int(epoch),
            "written": time.time(), "files": files}
    tmp = directory / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST_FILE)
    return directory / MANIFEST_FILE


def _fs(fs):
    if fs is not None:
        return fs
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def read_manifest(path: str | Path, *, fs=None) -> ManifestInfo | None:
    """The manifest of the checkpoint at ``path`` (on ``fs``, default local), or None when it
    has none or it cannot be parsed."""
    fs = _fs(fs)
    try:
        body = json.loads(fs.cat_file(f"{str(path).rstrip('/')}/{MANIFEST_FILE}"))
        return ManifestInfo(step=int(body["global_step"]), epoch=int(body["epoch"]),
                            written=float(body["written"]), files=dict(body["files"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def check_checkpoint(path: str | Path, *, fs=None) -> str | None:
    """What is wrong with the checkpoint at ``path`` (on ``fs``, default local), or None when
    it is whole. Reads every file once (sizes first, so a truncated file costs no hashing)."""
    fs = _fs(fs)
    root = str(path).rstrip("/")
    try:
        raw = fs.cat_file(f"{root}/{MANIFEST_FILE}")
    except FileNotFoundError:
        return (f"it has no {MANIFEST_FILE} (the file a checkpoint writes last: it was cut "
                "short, or written before checkpoints carried one)")
    manifest = read_manifest(root, fs=fs)
    if manifest is None:
        return f"its {MANIFEST_FILE} cannot be read ({len(raw)} bytes)"
    for name, want in sorted(manifest.files.items()):
        try:
            size = fs.size(f"{root}/{name}")
        except FileNotFoundError:
            return f"{name} is missing"
        if size != want["size"]:
            return f"{name} is {size} bytes, its manifest says {want['size']}"
    for name, want in sorted(manifest.files.items()):
        with fs.open(f"{root}/{name}", "rb") as stream:
            digest = _sha256(stream)
        if digest != want["sha256"]:
            return (f"{name} has sha256 {digest[:12]}..., its manifest says "
                    f"{want['sha256'][:12]}...")
    return None


def recorded_names(snapshot: bytes | str) -> list[str]:
    """The checkpoint directory names in a run's ``checkpoint_manager_snapshot.json``, in the
    order they were reported (oldest first).

    Raises:
        ValueError: the snapshot cannot be parsed.
    """
    try:
        body = json.loads(snapshot)
        names = [r["checkpoint_dir_name"] for r in body["checkpoint_results"]]
        order = body.get("checkpoint_report_indices") or list(range(len(names)))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a checkpoint manager snapshot: {exc}") from None
    return [name for _, name in sorted(zip(order, names, strict=False))]


def recorded_in(fs, root: str) -> list[str]:
    """The checkpoint names recorded in the run directory ``root`` on ``fs``, oldest first:
    Ray Train's snapshot, else a one-process run's index.

    Raises:
        FileNotFoundError: neither record exists (no checkpoint recorded yet).
        ValueError: the record cannot be parsed.
    """
    root = root.rstrip("/")
    try:
        return recorded_names(fs.cat_file(f"{root}/{SNAPSHOT_FILE}"))
    except FileNotFoundError:
        names = json.loads(fs.cat_file(f"{root}/{INDEX_FILE}"))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{INDEX_FILE} is not a list of checkpoint names")
    return names


def verify_checkpoint(path: str | Path, *, name: str | None = None, fs=None) -> ManifestInfo:
    """The checkpoint's manifest, once every file matches it.

    Args:
        path: the checkpoint directory.
        name: how to name the checkpoint in the error (its URI on run storage); default
            ``path``.
        fs: an fsspec filesystem; default local.

    Raises:
        CheckpointDamaged: the manifest is missing, or a file is missing or does not match.
    """
    problem = check_checkpoint(path, fs=fs)
    if problem is not None:
        raise CheckpointDamaged(f"checkpoint {name or path} is not whole: {problem}")
    manifest = read_manifest(path, fs=fs)
    assert manifest is not None  # checked just above
    return manifest
