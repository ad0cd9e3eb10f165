"""The training-side shard reader: which rank reads what, and equal batches on every rank.

The schedule is a pure function of (shards, seed, epoch, rank, world size, loader workers). In
training every rank yields exactly ``steps_per_epoch`` full batches, cycling through its shards
if its share runs short, so DDP never waits on a rank that ran out; the remainder of an epoch
(fewer than world_size x batch samples) is dropped, and different in every epoch. A bad sample
is skipped and counted without shortening the epoch: the rank reads on until its quota is met.
"""

from __future__ import annotations

import logging
import random
import tarfile
from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hypernym.data.manifest import Manifest
from hypernym.data.storage import open_fs
from hypernym.data.transforms import eval_transform, train_transform
from hypernym.errors import HypernymError

__all__ = ["ShardStream", "assign_shards", "make_loader", "steps_per_epoch", "worker_share"]

log = logging.getLogger(__name__)
_WARN_FIRST = 5  # bad samples logged one by one per stream; after that only counted


def steps_per_epoch(manifest: Manifest, split: str, *, world_size: int, batch_size: int) -> int:
    """Full batches every rank yields per training epoch: total // (world_size * batch_size)."""
    return manifest.num_samples(split) // (world_size * batch_size)


def assign_shards(
    num_shards: int, *, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool
) -> list[int]:
    """Shard indices for one rank: a seeded per-epoch permutation dealt round-robin.

    With fewer shards than ranks in training, a rank re-reads a shard (``shuffle`` mode);
    in evaluation (no shuffle) such a rank gets nothing, so each sample is evaluated once.
    """
    order = list(range(num_shards))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    mine = order[rank::world_size]
    if not mine and shuffle and order:
        mine = [order[rank % len(order)]]
    return mine


def worker_share(
    shards: list[int], *, steps: int | None, batch_size: int, worker: int, num_workers: int
) -> tuple[list[int], int | None]:
    """One DataLoader worker's shards and sample quota within a rank.

    Each worker batches its own stream (``drop_last`` applies per worker), so quotas are whole
    batches: the rank's ``steps`` are dealt over workers, and their sum is exactly ``steps``.
    ``steps=None`` (evaluation) reads each of the worker's shards once.
    """
    share = shards[worker::num_workers]
    if steps is None:
        return share, None
    if not share and shards:  # more workers than shards: re-read one so the quota can be met
        share = [shards[worker % len(shards)]]
    batches = steps // num_workers + (worker < steps % num_workers)
    return share, batches * batch_size


class ShardStream(IterableDataset):
    """(uint8 image, label) samples from one rank's shards.

    Args:
        urls: every shard of the split, in manifest order.
        sizes: samples per shard (from the manifest), to tell a run of bad samples from an end.
        steps: batches this rank yields (training: cycle until reached); None reads once.
        batch_size: samples per batch (quotas are whole batches per loader worker).
    """

    def __init__(self, *, urls: list[str], sizes: list[int], rank: int, world_size: int,
                 epoch: int, seed: int, img_size: int, train: bool, steps: int | None,
                 batch_size: int, buffer: int = 512,
                 crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        assert len(urls) == len(sizes)
        self.urls, self.sizes, self.rank, self.world_size = urls, sizes, rank, world_size
        self.epoch, self.seed, self.train = epoch, seed, train
        self.steps, self.batch_size, self.buffer = steps, batch_size, buffer
        self.transform = (train_transform(img_size, crop_scale) if train
                          else eval_transform(img_size))
        # Counted in the process that reads: with loader workers, each worker has its own.
        self.bad_samples = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        # Empty shards (every image of one was bad) are left out of the schedule: a worker whose
        # share were only those could never fill its quota.
        live = [i for i, n in enumerate(self.sizes) if n > 0]
        mine = [live[j] for j in assign_shards(len(live), seed=self.seed, epoch=self.epoch,
                                               rank=self.rank, world_size=self.world_size,
                                               shuffle=self.train)]
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine, quota = worker_share(mine, steps=self.steps, batch_size=self.batch_size,
                                   worker=worker, num_workers=workers)
        if quota == 0:
            return
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")
        # Samples come tagged with the pass over the shards they were read in: training cycles.
        passes: list[int] = []  # samples read in each finished pass
        samples = self._cycle(mine, passes) if quota is not None else self._once(mine)
        if self.train:
            samples = _shuffled(samples, rng, self.buffer)
        bad_in_pass: Counter = Counter()
        yielded = 0
        for pass_no, data, label in samples:
            try:
                image = self.transform(data)
            except (OSError, ValueError) as exc:
                self.bad_samples += 1
                bad_in_pass[pass_no] += 1
                if self.bad_samples <= _WARN_FIRST:
                    log.warning("rank %d: skipped an unreadable sample: %s", self.rank, exc)
                # A whole pass of bad samples: nothing here is readable. Fail, don't spin.
                # (Exact: the shuffle buffer lags the reads, so a pass is finished by the time
                # its last sample comes out.)
                if pass_no < len(passes) and bad_in_pass[pass_no] == passes[pass_no]:
                    raise HypernymError(
                        f"rank {self.rank}: no readable sample in shards "
                        f"{[self.urls[i] for i in mine]}; check them with `hypernym data "
                        "inspect` or prepare the dataset again") from exc
                continue
            yield image, label
            yielded += 1
            if quota is not None and yielded >= quota:
                return

    def _once(self, shard_ids: list[int], pass_no: int = 0):
        for i in shard_ids:
            for data, label in _read_shard(self.urls[i]):
                yield pass_no, data, label

    def _cycle(self, shard_ids: list[int], passes: list[int]):
        while True:
            found = 0
            for sample in self._once(shard_ids, len(passes)):
                found += 1
                yield sample
            if not found:  # empty shards would make a training rank loop forever
                raise HypernymError(f"rank {self.rank}: shards {[self.urls[i] for i in shard_ids]}"
                                    " hold no samples; prepare the dataset again")
            passes.append(found)


def _shuffled(samples, rng: random.Random, size: int):
    pool = []
    for sample in samples:
        if len(pool) < size:
            pool.append(sample)
            continue
        i = rng.randrange(size)
        yield pool[i]
        pool[i] = sample
    rng.shuffle(pool)
    yield from pool


def _read_shard(url: str):
    """Stream (jpg bytes, label) pairs from a tar; members of a sample are adjacent."""
    fs, path = open_fs(url)
    with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        key, fields = None, {}
        for member in tar:
            if not member.isfile():
                continue
            base, _, ext = member.name.partition(".")
            if base != key:
                if "jpg" in fields and "cls" in fields:
                    yield fields["jpg"], int(fields["cls"])
                key, fields = base, {}
            if ext in ("jpg", "cls"):
                fields[ext] = tar.extractfile(member).read()
        if "jpg" in fields and "cls" in fields:
            yield fields["jpg"], int(fields["cls"])


def make_loader(manifest: Manifest, root: str, split: str, *, rank: int, world_size: int,
                epoch: int, batch_size: int, img_size: int, train: bool, seed: int = 0,
                num_workers: int = 0,
                crop_scale: tuple[float, float] = (0.08, 1.0)) -> DataLoader:
    """A DataLoader of (uint8 [B,3,H,W], int64 [B]) batches for this rank.

    Training yields exactly ``steps_per_epoch(...)`` batches of ``batch_size`` on every rank;
    evaluation yields this rank's shards once (the last batch may be short, a rank may get none).
    """
    steps = (steps_per_epoch(manifest, split, world_size=world_size, batch_size=batch_size)
             if train else None)
    stream = ShardStream(urls=manifest.shard_urls(root, split),
                         sizes=[s.samples for s in manifest.splits.get(split, [])],
                         rank=rank, world_size=world_size, epoch=epoch, seed=seed,
                         img_size=img_size, train=train, steps=steps, batch_size=batch_size,
                         crop_scale=crop_scale)
    return DataLoader(stream, batch_size=batch_size, num_workers=num_workers, drop_last=train,
                      pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)
