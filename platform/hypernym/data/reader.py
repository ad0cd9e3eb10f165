"""The training-side shard reader: which rank reads what, and equal batches on every rank.

The schedule is a pure function of (shards, seed, epoch, rank, world size, loader workers). In
training every rank yields exactly ``steps_per_epoch`` full batches, cycling through its shards
if its share runs short, so DDP never waits on a rank that ran out; the remainder of an epoch
(fewer than world_size x batch samples) is dropped, and different in every epoch.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hypernym.data.manifest import Manifest
from hypernym.data.storage import open_fs
from hypernym.data.transforms import eval_transform, train_transform

__all__ = ["ShardStream", "assign_shards", "make_loader", "steps_per_epoch"]


def steps_per_epoch(manifest: Manifest, split: str, *, world_size: int, batch_size: int) -> int:
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


class ShardStream(IterableDataset):
    """(uint8 image, label) samples from one rank's shards.

    Args:
        urls: every shard of the split, in manifest order.
        limit: samples this rank yields (training: cycle until reached); None reads once.
    """

    def __init__(self, *, urls: list[str], rank: int, world_size: int, epoch: int, seed: int,
                 img_size: int, train: bool, limit: int | None, buffer: int = 512,
                 crop_scale: tuple[float, float] = (0.08, 1.0)) -> None:
        self.urls, self.rank, self.world_size = urls, rank, world_size
        self.epoch, self.seed, self.train = epoch, seed, train
        self.limit, self.buffer = limit, buffer
        self.transform = (train_transform(img_size, crop_scale) if train
                          else eval_transform(img_size))
        self.bad_samples = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        mine = assign_shards(len(self.urls), seed=self.seed, epoch=self.epoch, rank=self.rank,
                             world_size=self.world_size, shuffle=self.train)
        limit = self.limit
        info = get_worker_info()
        if info is not None:  # split this rank's shards (and its quota) over loader workers
            share = mine[info.id :: info.num_workers]
            mine = share or ([mine[info.id % len(mine)]] if mine and self.train else [])
            if limit is not None:
                limit = limit // info.num_workers + (info.id < limit % info.num_workers)
        worker = info.id if info else 0
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")
        samples = self._cycle(mine) if limit is not None else self._once(mine)
        if self.train:
            samples = _shuffled(samples, rng, self.buffer)
        for count, (data, label) in enumerate(samples):
            if limit is not None and count >= limit:
                return
            try:
                yield self.transform(data), label
            except (OSError, ValueError):
                self.bad_samples += 1  # a corrupt sample is skipped, not fatal

    def _once(self, shard_ids: list[int]):
        for i in shard_ids:
            yield from _read_shard(self.urls[i])

    def _cycle(self, shard_ids: list[int]):
        while shard_ids:
            yield from self._once(shard_ids)


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
    """A DataLoader of (uint8 [B,3,H,W], int64 [B]) batches for this rank."""
    limit = None
    if train:
        limit = steps_per_epoch(manifest, split, world_size=world_size,
                                batch_size=batch_size) * batch_size
    stream = ShardStream(urls=manifest.shard_urls(root, split), rank=rank, world_size=world_size,
                         epoch=epoch, seed=seed, img_size=img_size, train=train, limit=limit,
                         crop_scale=crop_scale)
    return DataLoader(stream, batch_size=batch_size, num_workers=num_workers, drop_last=train,
                      pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)
