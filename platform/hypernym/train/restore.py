"""A worker's restore: the newest whole checkpoint of its run, not merely the latest one.

``ray.train.get_checkpoint()`` hands a worker the latest checkpoint Ray Train's controller
recorded, and only that one. When it is not whole (`hypernym.train.verify`: its manifest is
missing, or a file is missing or does not match), the checkpoints recorded before it are still
in the run's storage directory beside it, listed in order in the controller's
``checkpoint_manager_snapshot.json`` (Ray Train V2's layout: ``<run dir>/<checkpoint dir>`` and
``<run dir>/checkpoint_manager_snapshot.json``). The newest whole one is restored instead, with a
warning naming each checkpoint skipped and what failed; the steps after it are trained again.

Each rank verifies and loads its own copy (a per-rank download: several ranks of one node
sharing a download can read a half-written file, Ray issue 48726), so the bytes checked are the
bytes loaded. The ranks then agree on one checkpoint (an all-gather of each one's choice): a
checkpoint that fails on any rank is used by none, and all continue from the same state.

A run in one process (`restore_newest_local`) reads its own index of checkpoints
(``checkpoints.json``) the same way: newest first, the first whole one restored.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hypernym.errors import HypernymError
from hypernym.train.checkpoint import load_state
from hypernym.train.verify import SNAPSHOT_FILE, check_checkpoint, recorded_names

__all__ = ["Restored", "recorded_checkpoints", "restore_newest_local", "restore_newest_whole"]

log = logging.getLogger(__name__)


@dataclass
class Restored:
    """The state a worker continues from, and the checkpoints skipped to get it."""

    state: dict[str, Any]
    name: str  # the checkpoint directory's name
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, what failed)
    # Set when checkpoints were skipped: the names of this attempt's checkpoints get it, so
    # they never reuse the directory of a damaged one the controller still holds (deleting
    # that one later would delete them).
    name_suffix: str = ""
    source: Any = None  # the checkpoint restored (a one-process run's: its LocalCheckpoint)

    def tags(self) -> dict[str, str]:
        """The MLflow run tags that record a fallback (empty when none happened)."""
        if not self.skipped:
            return {}
        skipped = "; ".join(f"{name}: {problem}" for name, problem in self.skipped)
        return {"hypernym.restored_from": self.name,
                "hypernym.checkpoints_skipped": skipped[:5000]}


def recorded_checkpoints(run_dir: str, filesystem) -> list[str]:
    """The checkpoint directory names Ray Train recorded for the run in ``run_dir`` (a path on
    the pyarrow ``filesystem``), oldest first; empty when its snapshot cannot be read."""
    try:
        with filesystem.open_input_stream(f"{run_dir}/{SNAPSHOT_FILE}") as stream:
            return recorded_names(stream.read())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the checkpoint record %s/%s: %s", run_dir, SNAPSHOT_FILE, exc)
        return []


def _candidates(checkpoint) -> Iterator[Any]:
    """The latest checkpoint, then those recorded before it, newest first."""
    import ray.train

    yield checkpoint
    run_dir, latest = checkpoint.path.rstrip("/").rsplit("/", 1)
    names = recorded_checkpoints(run_dir, checkpoint.filesystem)
    before = names[:names.index(latest)] if latest in names else names
    for name in reversed(before):
        yield ray.train.Checkpoint(path=f"{run_dir}/{name}", filesystem=checkpoint.filesystem)


@contextmanager
def _local_copy(checkpoint) -> Iterator[str]:
    """The checkpoint as a local directory: in place on a local filesystem, else this rank's
    own download, removed afterwards."""
    from pyarrow.fs import LocalFileSystem

    if isinstance(checkpoint.filesystem, LocalFileSystem):
        yield checkpoint.path
        return
    local = tempfile.mkdtemp(prefix="hypernym-restore-")
    try:
        yield checkpoint.to_directory(local)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _first_whole(candidates: list, start: int) -> tuple[int, dict | None, list]:
    """This rank's first whole checkpoint from ``candidates[start]`` on: its index (``len``
    when none), its state, and (name, problem) of each one it skipped."""
    skipped = []
    for index in range(start, len(candidates)):
        candidate = candidates[index]
        with _local_copy(candidate) as local:
            problem = check_checkpoint(local)
            if problem is None:
                return index, load_state(local, verify=False), skipped  # verified just now
        skipped.append((candidate.path.rstrip("/").rsplit("/", 1)[-1], problem))
    return len(candidates), None, skipped


def restore_newest_whole(checkpoint) -> Restored | None:
    """The state of the newest whole checkpoint at or before ``checkpoint``, the same on every
    rank (a collective when there are several).

    Args:
        checkpoint: what ``ray.train.get_checkpoint()`` returned (None: a fresh run).

    Returns:
        None for a fresh run; else the restored state, the checkpoint it came from, and the
        checkpoints skipped on the way (each also logged as a warning).

    Raises:
        HypernymError: no checkpoint of the run is whole; the message lists each and why.
    """
    from hypernym.train.distributed import all_gather

    if checkpoint is None:
        return None
    candidates = list(_candidates(checkpoint))
    skipped: dict[str, str] = {}
    index, state, mine = _first_whole(candidates, 0)
    while True:
        # Every rank must continue from the same checkpoint: the oldest any rank needs (one
        # rank's copy may fail where another's passed; it is then trusted by none).
        views = all_gather((index, mine))
        for _, theirs in views:
            for name, problem in theirs:
                skipped.setdefault(name, problem)
        agreed = max(i for i, _ in views)
        if all(i == agreed for i, _ in views):
            break
        index, state, mine = (_first_whole(candidates, agreed) if index != agreed
                              else (index, state, []))
    for name, problem in skipped.items():
        log.warning("skipping checkpoint %s/%s: %s", checkpoint.path.rsplit("/", 1)[0], name,
                    problem)
    if index == len(candidates):
        raise _no_whole_checkpoint(checkpoint.path.rsplit("/", 1)[0], skipped)
    chosen = candidates[index]
    if skipped:
        log.warning("restoring from %s, the newest whole checkpoint; the steps after it are "
                    "trained again", chosen.path)
    return Restored(state=state, name=chosen.path.rstrip("/").rsplit("/", 1)[-1],
                    skipped=list(skipped.items()),
                    name_suffix=time.strftime("-r%Y%m%dT%H%M%S", time.gmtime()) if skipped
                    else "")


def _no_whole_checkpoint(where: str, skipped: dict[str, str]) -> HypernymError:
    listed = "; ".join(f"{name}: {problem}" for name, problem in skipped.items())
    return HypernymError(
        f"no whole checkpoint to resume from in {where} ({listed}). Start a new run; keep more "
        "checkpoints to fall back on (train.keep_checkpoints)")


def restore_newest_local(run_dir: str) -> Restored | None:
    """A one-process run's restore: the newest whole checkpoint it kept under ``run_dir`` (on
    run storage; `hypernym.train.checkpointing.LocalCheckpoints`), skipping damaged ones with
    a warning each.

    Returns:
        None when the run has no checkpoint yet.

    Raises:
        HypernymError: no checkpoint of the run is whole; the message lists each and why.
    """
    from hypernym.train.checkpointing import local_checkpoints

    checkpoints = local_checkpoints(run_dir)
    if not checkpoints:
        return None
    skipped: dict[str, str] = {}
    for checkpoint in reversed(checkpoints):
        name = checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
        with checkpoint.as_directory() as local:
            problem = check_checkpoint(local)
            if problem is None:
                state = load_state(local, verify=False)  # verified just now
                if skipped:
                    log.warning("restoring from %s, the newest whole checkpoint; the steps "
                                "after it are trained again", checkpoint.path)
                return Restored(state=state, name=name, skipped=list(skipped.items()),
                                source=checkpoint)
        log.warning("skipping checkpoint %s: %s", checkpoint.path, problem)
        skipped[name] = problem
    raise _no_whole_checkpoint(run_dir, skipped)
