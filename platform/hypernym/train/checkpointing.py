"""Checkpoints at the core's hooks: mid-epoch and at each epoch's end, with the best epoch.

`CheckpointHooks` is the part every shell shares: which state goes into a checkpoint, and, with
``registry.select: best``, keeping the best epoch's weights so far (`hypernym.train.selection`),
which the last checkpoint carries for registration. Where a checkpoint goes is the shell's:

- Ray Train's shell reports it to Ray (`hypernym.train.ray_worker.RayCheckpoints`);
- a run in one process writes it to run storage itself (`LocalCheckpoints`), in the layout Ray
  Train uses (``<storage>/<run name>/<checkpoint name>/``), so registration and resume read
  both alike.

DDP replicas are identical, so rank 0's state is the checkpoint; a sharded (FSDP) model's state
is gathered by all ranks together, into rank 0.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypernym.config import RegisterSpec
from hypernym.data.storage import is_remote, join, open_fs
from hypernym.train.checkpoint import save_state
from hypernym.train.core import Hooks, Trainer
from hypernym.train.distributed import is_sharded
from hypernym.train.selection import beats, epoch_choice
from hypernym.train.verify import INDEX_FILE

__all__ = ["CheckpointHooks", "LocalCheckpoint", "LocalCheckpoints", "latest_local_checkpoint",
           "local_checkpoints"]

INDEX = INDEX_FILE  # a run's checkpoints in the order they were taken (LocalCheckpoints)


class CheckpointHooks(Hooks):
    """What goes into a worker's checkpoints; subclasses say where they go (`save`).

    Args:
        rank: this worker's world rank (rank 0 writes the checkpoint).
        recipe: the resolved recipe, stored beside every checkpoint.
        registry: the recipe's ``registry`` section (which epoch is "best", and by what).
        ema: whether the run keeps an EMA of the weights.
        name_suffix: appended to every checkpoint's name (after a restore that skipped damaged
            checkpoints: `hypernym.train.restore.Restored.name_suffix`).
    """

    def __init__(self, *, rank: int, recipe: dict[str, Any], registry: RegisterSpec,
                 ema: bool, name_suffix: str = "") -> None:
        self.rank, self.recipe, self.registry, self.ema = rank, recipe, registry, ema
        self.name_suffix = name_suffix

    def mid_epoch(self, trainer: Trainer) -> None:
        """A checkpoint of the epoch so far (the core synced its progress)."""
        step = trainer.state.global_step
        self.save(self._payload(trainer), {"progress/step": step},
                  name=f"step-{step:08d}{self.name_suffix}")

    def epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """The epoch's checkpoint and metrics; with ``select: best``, the best epoch so far."""
        state = trainer.state
        payload = self._payload(trainer)
        if self.registry.select == "best":  # an epoch end, validated
            choice = epoch_choice(self.registry, metrics, self.ema)
            if beats(choice, state.best, self.registry.mode):
                weights = None
                if payload is not None:  # rank 0 keeps a CPU copy of the weights
                    weights = {k: v.detach().to("cpu", copy=True)
                               for k, v in payload[choice["kind"]].items()}
                state.best = {**choice, "epoch": state.epoch, "weights": weights}
            if payload is not None:
                payload["best"] = state.best
        self.save(payload, metrics, name=f"epoch-{state.epoch:04d}{self.name_suffix}")

    def save(self, payload: dict | None, metrics: dict[str, float], *, name: str) -> None:
        """Store the checkpoint ``name`` (``payload`` is None on ranks that write nothing)."""
        raise NotImplementedError

    def _payload(self, trainer: Trainer) -> dict | None:
        sharded = is_sharded(trainer.state.model)
        return trainer.state_dict() if self.rank == 0 or sharded else None


class LocalCheckpoints(CheckpointHooks):
    """A one-process run's checkpoints, written to run storage (a path or ``s3://``) under
    ``run_dir``; the latest ``keep`` are kept, listed in order in ``checkpoints.json``."""

    def __init__(self, run_dir: str, *, keep: int, **kwargs) -> None:
        super().__init__(rank=0, **kwargs)
        self.run_dir, self.keep = run_dir, keep
        self.latest: LocalCheckpoint | None = None

    def save(self, payload: dict | None, metrics: dict[str, float], *, name: str) -> None:
        fs, root = open_fs(self.run_dir)
        target = join(root, name)
        with tempfile.TemporaryDirectory() as tmp:
            save_state(tmp, payload, self.recipe)  # its manifest last
            if fs.exists(target):
                fs.rm(target, recursive=True)
            fs.put(f"{tmp}/", target, recursive=True)  # files first, the index names it after
        names = [n for n in _index(fs, root) if n != name] + [name]
        for old in names[:-self.keep]:
            fs.rm(join(root, old), recursive=True)
        fs.pipe_file(join(root, INDEX), json.dumps(names[-self.keep:]).encode())
        self.latest = LocalCheckpoint(join(self.run_dir, name))


@dataclass(frozen=True)
class LocalCheckpoint:
    """A checkpoint directory on run storage (what Ray Train's ``Checkpoint`` offers the
    driver: its ``path`` and a local copy to read)."""

    path: str

    @contextmanager
    def as_directory(self) -> Iterator[str]:
        if not is_remote(self.path):
            yield self.path
            return
        fs, path = open_fs(self.path)
        tmp = tempfile.mkdtemp(prefix="hypernym-ckpt-")
        try:
            fs.get(f"{path}/", f"{tmp}/", recursive=True)
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def latest_local_checkpoint(run_dir: str) -> LocalCheckpoint | None:
    """The last checkpoint a one-process run took under ``run_dir`` (None: none yet)."""
    checkpoints = local_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def local_checkpoints(run_dir: str) -> list[LocalCheckpoint]:
    """The checkpoints a one-process run kept under ``run_dir``, oldest first."""
    fs, root = open_fs(run_dir)
    return [LocalCheckpoint(join(run_dir, name)) for name in _index(fs, root)]


def _index(fs, root: str) -> list[str]:
    path = join(root, INDEX)
    return json.loads(fs.cat_file(path)) if fs.exists(path) else []
