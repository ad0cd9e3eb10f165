"""What each optimizer step trained on: the exactly-once record, and the optional sample trace.

`ConsumedSamples` keeps the ids of the samples each step trained on and, when a checkpoint is
taken, merges every rank's into the replicated `EpochProgress` the checkpoint saves: a resumed
epoch is then scheduled over exactly the samples not yet trained on. Ids are counted here, on the
training side, so what the loaders prefetched or held in their buffers is not "consumed".
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hypernym.data.schedule import EpochProgress
from hypernym.train.distributed import all_gather

__all__ = ["ConsumedSamples", "SampleTrace"]


class ConsumedSamples:
    """The ids trained on since the last `sync`, for ``progress`` (this epoch's record)."""

    def __init__(self, progress: EpochProgress) -> None:
        self.progress = progress
        self.pending: list[torch.Tensor] = []

    def add(self, epoch: int, step: int, batches: list) -> None:
        """Record the batches (one per accumulation step) of optimizer step ``step``."""
        self.pending.extend(batch.id for batch in batches)

    def sync(self) -> None:
        """Merge every rank's trained ids into the epoch progress (a collective)."""
        mine = torch.cat(self.pending) if self.pending else torch.zeros(0, dtype=torch.int64)
        self.pending.clear()
        for ids in all_gather(mine):
            self.progress.mark(ids.numpy())


class SampleTrace:
    """With HYPERNYM_SAMPLE_TRACE=DIR set for the driver, every rank appends ``epoch step id id
    ...`` per batch to its own file there, named by the step it started from: an audit of the
    data order (which samples went into which step, across restarts). Off by default."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("a", buffering=1)

    @classmethod
    def open(cls, folder: str | None, rank: int, start_step: int) -> SampleTrace | None:
        """A trace in ``folder``, or None when no folder is set."""
        if not folder:
            return None
        Path(folder).mkdir(parents=True, exist_ok=True)
        return cls(Path(folder) / f"from-{start_step:08d}-rank{rank}-pid{os.getpid()}.txt")

    def add(self, epoch: int, step: int, batches: list) -> None:
        """One line per batch of optimizer step ``step``."""
        for batch in batches:
            self.fh.write(f"{epoch} {step} {' '.join(map(str, batch.id.tolist()))}\n")
