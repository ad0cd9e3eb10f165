"""The reading schedule of an epoch, and the record of what training has consumed of it.

Every sample of a split has an id: its shard's offset (shard sizes from the manifest, in manifest
order) plus its place in the shard's tar. An epoch's schedule cuts the shards, in a seeded
per-epoch order, into one contiguous run of samples per (rank, loader worker) "slot", in slot
order (rank 0's workers first). It is a pure function of (shard sizes, seed, epoch, world size,
loader workers, batch size, samples already consumed), tested without processes.

Balance: every rank yields ``steps`` full batches, ``steps = remaining // (world_size x batch)``;
its loader workers share those batches round-robin (whole batches each, as DataLoader deals them).
A slot's run holds its quota plus an even share of the remainder (fewer than world_size x batch
samples), which it reads but does not yield: those samples wait for the next epoch, and which ones
they are changes every epoch. Nobody reads a sample twice in an epoch.

Exactly once: `EpochProgress` marks the ids of every batch the optimizer has stepped on (counted on
the training side, so prefetched and shuffle-buffered samples are not "consumed"). It is saved in
the checkpoint; a resumed epoch is scheduled over the samples not yet consumed, for whatever world
size and loader workers the resumed run has.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["EpochProgress", "Piece", "Slot", "plan_epoch", "shard_order"]


@dataclass(frozen=True)
class Piece:
    """Samples ``start:stop`` of shard ``shard``'s not-yet-consumed samples, in tar order."""

    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class Slot:
    """What one loader worker of one rank reads in an epoch."""

    rank: int
    worker: int
    pieces: tuple[Piece, ...]
    quota: int | None  # samples to yield, whole batches; None = every sample read (evaluation)

    @property
    def size(self) -> int:
        return sum(p.stop - p.start for p in self.pieces)


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The epoch's shard order: a seeded permutation (training) or manifest order."""
    order = list(range(num_shards))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def plan_epoch(
    remaining: Sequence[int], *, seed: int, epoch: int, world_size: int, num_workers: int,
    batch_size: int, train: bool,
) -> tuple[list[Slot], int]:
    """Every slot of the epoch, in (rank, worker) order, and the steps every rank takes.

    Args:
        remaining: per shard (manifest order), the samples not yet consumed this epoch (the
            shard sizes for a fresh epoch).
        train: quotas of whole batches and a shuffled shard order; otherwise (evaluation) every
            sample is read once, spread evenly, with no quota and ``steps`` 0.
    """
    workers = max(num_workers, 1)
    slots = world_size * workers
    order = shard_order(len(remaining), seed=seed, epoch=epoch, shuffle=train)
    total = sum(remaining)
    steps = total // (world_size * batch_size) if train else 0
    if train:
        quotas = [(steps // workers + (w < steps % workers)) * batch_size
                  for _ in range(world_size) for w in range(workers)]
    else:
        quotas = [0] * slots
    spare = total - sum(quotas)  # spread so that every slot reads about as much
    sizes = [q + spare // slots + (i < spare % slots) for i, q in enumerate(quotas)]

    runs = _cut([(s, remaining[s]) for s in order if remaining[s] > 0], sizes)
    plan = [
        Slot(rank=i // workers, worker=i % workers, pieces=tuple(runs[i]),
             quota=quotas[i] if train else None)
        for i in range(slots)
    ]
    return plan, steps


def _cut(shards: list[tuple[int, int]], sizes: list[int]) -> list[list[Piece]]:
    """Cut the run of shards (id, count) into consecutive pieces of the given sizes."""
    runs: list[list[Piece]] = [[] for _ in sizes]
    slot, room = 0, sizes[0] if sizes else 0
    for shard, count in shards:
        start = 0
        while start < count:
            while room == 0:
                slot += 1
                room = sizes[slot]
            take = min(room, count - start)
            runs[slot].append(Piece(shard, start, start + take))
            start, room = start + take, room - take
    return runs


class EpochProgress:
    """The ids of the training samples consumed in the current epoch (a bitmap, 1 bit each)."""

    def __init__(self, sizes: Sequence[int], epoch: int = 0) -> None:
        self.sizes = [int(n) for n in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.epoch = epoch
        self.consumed = np.zeros(int(self.offsets[-1]), dtype=bool)

    def start(self, epoch: int) -> None:
        """Begin ``epoch``; a resumed epoch keeps what was consumed of it."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed[:] = False

    def mark(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.consumed.size):
            raise ValueError(f"sample ids outside 0..{self.consumed.size - 1}")
        self.consumed[ids] = True

    def remaining(self) -> list[int]:
        """Per shard, the samples not yet consumed."""
        seen = np.concatenate([[0], np.cumsum(self.consumed, dtype=np.int64)])
        done = seen[self.offsets[1:]] - seen[self.offsets[:-1]]
        return [n - int(d) for n, d in zip(self.sizes, done, strict=True)]

    def unconsumed(self, shard: int) -> np.ndarray:
        """The tar positions of ``shard``'s samples not yet consumed, ascending."""
        lo, hi = self.offsets[shard], self.offsets[shard + 1]
        return np.flatnonzero(~self.consumed[lo:hi])

    @property
    def count(self) -> int:
        return int(self.consumed.sum())

    def state_dict(self) -> dict:
        # Tensors and ints only: checkpoints load with weights_only=True.
        return {"epoch": self.epoch, "samples": int(self.consumed.size),
                "bits": torch.from_numpy(np.packbits(self.consumed))}

    def load_state_dict(self, state: dict) -> None:
        if int(state["samples"]) != self.consumed.size:
            raise ValueError(f"the checkpoint's epoch progress covers {state['samples']} samples, "
                             f"the dataset has {self.consumed.size}: resume on the same dataset")
        self.epoch = int(state["epoch"])
        bits = np.unpackbits(state["bits"].numpy())[: self.consumed.size]
        self.consumed = bits.astype(bool)
