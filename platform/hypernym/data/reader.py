"""The training-side shard reader: a rank's slots of the epoch's schedule, as uint8 batches.

Which loader worker of which rank reads which samples is decided by `hypernym.data.schedule`
(a pure function; see there for the balance and remainder policy). Every sample comes out with
its id, so the training loop can record what it consumed (`EpochProgress`) and a resumed run reads
only the rest. A bad sample is skipped and counted without shortening the epoch: a worker whose
run is short of its quota re-reads it (logged), so DDP never waits on a rank that ran out.

Remote shards (S3) are fetched whole, two ahead of the one being decoded, with retries on
transient errors; local shards are streamed from disk.
"""

from __future__ import annotations

import io
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hypernym.data.codec import LabelCodec, RawSample, SampleCodec
from hypernym.data.collate import Collate
from hypernym.data.device_decode import CropPlan
from hypernym.data.manifest import Manifest
from hypernym.data.schedule import EpochProgress, Slot, plan_epoch
from hypernym.data.storage import RETRY_S, is_remote, open_fs, unreachable_errors
from hypernym.data.tar import TarFormatError, iter_tar
from hypernym.data.transforms import eval_transform, train_transform
from hypernym.errors import HypernymError

__all__ = ["EpochLoader", "Sample", "ShardStream", "make_loader", "read_members", "read_shard",
           "steps_per_epoch"]

log = logging.getLogger(__name__)
_WARN_FIRST = 5  # bad samples logged one by one per stream; after that only counted
# A remote shard is retried for this long (backoff 0.5 s doubling to 8 s): an S3 endpoint that
# restarts or drops off the network for a while stalls training, it does not end it.
_RETRY_S = RETRY_S
_PREFETCH = 4  # batches each loader worker prepares ahead
_AHEAD = 2  # remote shards each loader worker downloads ahead


class Sample(NamedTuple):
    """One sample; a loader's batch is a Sample of stacked tensors (`hypernym.data.collate`).

    ``target`` is what the task's codec made of the sample's members (a class index for
    single-label classification; the batch holds what the codec's ``collate`` made of them).
    """

    image: torch.Tensor  # uint8 [3, H, W]
    target: Any
    id: int  # the sample's id in the split (see hypernym.data.schedule)
    skipped: int  # bad samples this loader worker skipped since its previous sample


def steps_per_epoch(manifest: Manifest, split: str, *, world_size: int, batch_size: int) -> int:
    """Full batches every rank yields in a fresh training epoch: total // (world x batch)."""
    return manifest.num_samples(split) // (world_size * batch_size)


class ShardStream(IterableDataset):
    """`Sample`s from one rank's part of the epoch.

    Args:
        urls: every shard of the split, in manifest order.
        sizes: samples per shard (from the manifest): they define the sample ids.
        progress: what training consumed of this epoch already (a resumed run); None: nothing.
        batch_size: samples per batch (quotas are whole batches per loader worker).
        codec: what a sample's tar members become (image and target): the task's; the
            default reads single-label samples (``jpg`` and ``cls``).
    """

    def __init__(self, *, urls: list[str], sizes: list[int], rank: int, world_size: int,
                 epoch: int, seed: int, img_size: int, train: bool, batch_size: int,
                 progress: EpochProgress | None = None, buffer: int = 512,
                 crop_scale: tuple[float, float] = (0.08, 1.0),
                 rand_augment: tuple[int, int] | None = None,
                 decode_on: str = "loader", codec: SampleCodec | None = None) -> None:
        assert len(urls) == len(sizes)
        self.codec = codec or LabelCodec()
        self.urls, self.rank, self.world_size = urls, rank, world_size
        self.epoch, self.seed, self.train = epoch, seed, train
        self.batch_size, self.buffer = batch_size, buffer
        if progress is None or progress.epoch != epoch:
            progress = EpochProgress(sizes, epoch)
        self.progress = progress
        if decode_on == "device":  # workers only size the JPEG and draw the crop
            self.transform = CropPlan(img_size, train=train, scale=crop_scale)
        else:
            self.transform = (train_transform(img_size, crop_scale, rand_augment) if train
                              else eval_transform(img_size))
        # Counted in the process that reads: with loader workers, each worker has its own.
        self.bad_samples = 0

    def plan(self, num_workers: int) -> tuple[list[Slot], int]:
        return plan_epoch(self.progress.remaining(), seed=self.seed, epoch=self.epoch,
                          world_size=self.world_size, num_workers=num_workers,
                          batch_size=self.batch_size, train=self.train)

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slots, _ = self.plan(workers)
        slot = slots[self.rank * workers + worker]
        quota = slot.quota
        if quota == 0 or not slot.pieces:
            return
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")
        yielded, pieces, skipped = 0, slot.pieces, 0
        for pass_no in itertools.count():
            # One pass, shuffled within itself: a later pass (only to make up for bad samples)
            # starts once this one has drained, so no sample comes twice unless the quota needs
            # it. Later passes read the whole epoch, since a small run may hold only bad samples.
            samples = self._once(pieces)
            if self.train:
                samples = _shuffled(samples, rng, self.buffer)
            read = good = 0
            for raw in samples:
                read += 1
                try:
                    image, target = self.codec(raw, self.transform)
                except (OSError, ValueError, KeyError) as exc:
                    self.bad_samples += 1
                    skipped += 1
                    if self.bad_samples <= _WARN_FIRST:
                        log.warning("rank %d: skipped unreadable sample %d (%s): %s", self.rank,
                                    raw.id, raw.key, exc)
                    continue
                good += 1
                yield Sample(image, target, raw.id, skipped)
                yielded, skipped = yielded + 1, 0
                if quota is not None and yielded >= quota:
                    return
            if quota is None:
                return
            if pass_no > 0 and not read:  # would make a training rank loop forever
                raise HypernymError(f"rank {self.rank}: the shards hold no samples; prepare "
                                    "the dataset again")
            if pass_no > 0 and not good:  # nothing is readable: fail, don't spin
                raise HypernymError(
                    f"rank {self.rank}: no readable sample in shards {self._names(pieces)}; "
                    "check them with `hypernym data inspect` or prepare the dataset again")
            log.warning("rank %d: re-reading to fill the epoch's quota (%d bad samples so "
                        "far): some samples are seen twice this epoch", self.rank,
                        self.bad_samples)
            pieces = slot.pieces + tuple(p for other in slots for p in other.pieces)

    def _names(self, pieces) -> list[str]:
        return sorted({self.urls[p.shard] for p in pieces})

    def _once(self, pieces):
        offsets = self.progress.offsets
        for piece, data in _prefetched(self.urls, pieces):
            wanted = self.progress.unconsumed(piece.shard)[piece.start : piece.stop]
            if not len(wanted):
                continue
            wanted_set, last = set(wanted.tolist()), int(wanted[-1])
            url = self.urls[piece.shard]
            members = read_members(data, name=url, members=self.codec.members)
            for position, (key, fields) in enumerate(members):
                if position in wanted_set:
                    yield RawSample(key, fields, int(offsets[piece.shard]) + position,
                                    self.epoch, url)
                if position >= last:
                    break  # the rest of the shard belongs to another slot


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


def _prefetched(urls: list[str], pieces):
    """(piece, source) in order: a local path to stream, or a remote shard's bytes, downloaded
    `_AHEAD` shards ahead so that the network and the decoding overlap (two, so that one slow
    request does not stall the decoder)."""
    if not pieces or not is_remote(urls[pieces[0].shard]):
        for piece in pieces:
            yield piece, urls[piece.shard]
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypernym-prefetch")
    try:
        ahead = deque(pool.submit(_fetch, urls[p.shard]) for p in pieces[:_AHEAD])
        for i, piece in enumerate(pieces):
            data = ahead.popleft().result()
            if i + _AHEAD < len(pieces):
                ahead.append(pool.submit(_fetch, urls[pieces[i + _AHEAD].shard]))
            yield piece, data
    finally:  # a consumer that stops early does not wait for downloads it won't use
        pool.shutdown(wait=False, cancel_futures=True)


def _transient() -> tuple[type[BaseException], ...]:
    """Errors worth retrying: an unreachable endpoint, and any OSError of a read."""
    return (OSError, *unreachable_errors())


def _fetch(url: str) -> bytes:
    """A remote shard's bytes, retrying transient errors for ``_RETRY_S`` and at least once,
    however long the first attempt took (a missing shard fails at once)."""
    fs, path = open_fs(url)
    deadline = time.monotonic() + _RETRY_S
    for attempt in itertools.count():
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise HypernymError(f"shard {url} is missing: the dataset changed after its manifest "
                                "was written; prepare it again") from None
        except _transient() as exc:
            if attempt > 0 and time.monotonic() > deadline:
                raise HypernymError(f"cannot read shard {url} after {attempt + 1} attempts "
                                    f"over {_RETRY_S:.0f} s: {exc}") from exc
            log.warning("reading %s failed (%s); retrying", url, exc)
            time.sleep(min(0.5 * 2**attempt, 8.0))
    raise AssertionError("unreachable")


def read_shard(source: str | bytes, *, name: str | None = None):
    """(jpg bytes, class index) per single-label sample of a shard, in tar order."""
    for _, fields in read_members(source, name=name, members=("jpg", "cls")):
        yield fields["jpg"], int(fields["cls"])


def read_members(source: str | bytes, *, name: str | None = None,
                 members: tuple[str, ...] = ("jpg", "cls")):
    """(key, {member: bytes}) per sample of a shard that has all of ``members``, in tar order
    (the members of a sample are adjacent: webdataset's grouping by the key before the first
    dot). Only ``members`` are kept.

    ``source`` is a shard's path or URL, or its bytes (then ``name`` names it in errors).
    Raises HypernymError when the shard is not a readable tar.
    """
    name = name or (source if isinstance(source, str) else "shard")
    try:
        if isinstance(source, bytes):
            yield from _samples(iter_tar(io.BytesIO(source), name=name), members)
            return
        fs, path = open_fs(source)
        with fs.open(path, "rb", block_size=1 << 22) as fh:
            yield from _samples(iter_tar(fh, name=name), members)
    except TarFormatError as exc:
        raise HypernymError(f"shard {exc}; check it with `hypernym data inspect` or prepare "
                            "the dataset again") from None


def _samples(tar_members, wanted: tuple[str, ...]):
    key, fields = None, {}
    for member, data in tar_members:
        base, _, ext = member.partition(".")
        if base != key:
            if key is not None and all(m in fields for m in wanted):
                yield key, fields
            key, fields = base, {}
        if ext in wanted:
            fields[ext] = data
    if key is not None and all(m in fields for m in wanted):
        yield key, fields


class EpochLoader:
    """A rank's batches of one pass over a split; ``len()`` is how many it yields.

    Training yields ``steps_per_epoch`` full batches on every rank for a fresh epoch (fewer for an
    epoch resumed part-way); evaluation yields this rank's part once (the last batch may be
    short), so its length is counted from the schedule too.
    """

    def __init__(self, loader: DataLoader, batches: int) -> None:
        self.loader, self.batches = loader, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        return iter(self.loader)


def make_loader(manifest: Manifest, root: str, split: str, *, rank: int, world_size: int,
                epoch: int, batch_size: int, img_size: int, train: bool, seed: int = 0,
                num_workers: int = 0, progress: EpochProgress | None = None,
                crop_scale: tuple[float, float] = (0.08, 1.0),
                rand_augment: tuple[int, int] | None = None,
                recycle: bool = False, decode_on: str = "loader",
                shuffle_buffer: int = 512, codec: SampleCodec | None = None) -> EpochLoader:
    """An `EpochLoader` of this rank's batches: `Sample` of uint8 images [B,3,H,W], the codec's
    collated targets, sample ids and skipped bad samples (int64 [B] each).

    ``recycle=True`` has the loader workers reuse their batches' image memory (10% less CPU per
    image, see `hypernym.data.collate`): a batch's images stay intact while the consumer holds it
    and the next one, no longer, so copy them to keep them. The training loop does.

    ``decode_on="device"``: batches hold `EncodedBatch`es (JPEG bytes and crop boxes) for
    `hypernym.data.device_decode.decode_batch` to decode on the training device.

    ``codec``: the task's (`hypernym.data.codec`); the default reads single-label samples. A
    codec with a ``for_reading(train=...)`` method is replaced by what it returns for this pass
    (a codec that augments images and boxes together knows training from evaluation so).
    """
    codec = codec or LabelCodec()
    if hasattr(codec, "for_reading"):  # a codec with its own joint transform (boxes)
        codec = codec.for_reading(train=train)
    sizes = [s.samples for s in manifest.splits.get(split, [])]
    stream = ShardStream(urls=manifest.shard_urls(root, split), sizes=sizes, rank=rank,
                         world_size=world_size, epoch=epoch, seed=seed, img_size=img_size,
                         train=train, batch_size=batch_size, progress=progress,
                         crop_scale=crop_scale, rand_augment=rand_augment,
                         decode_on=decode_on, buffer=shuffle_buffer, codec=codec)
    collate = Collate(codec, encoded=decode_on == "device",
                      slots=_PREFETCH + 3 if recycle and num_workers else 0)
    loader = DataLoader(stream, batch_size=batch_size, num_workers=num_workers, drop_last=train,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False,
                        prefetch_factor=_PREFETCH if num_workers else None, collate_fn=collate)
    slots, steps = stream.plan(max(num_workers, 1))
    if not train:  # every sample read once: this rank's slots, batched per loader worker
        mine = slots[rank * max(num_workers, 1):(rank + 1) * max(num_workers, 1)]
        steps = sum(-(-s.size // batch_size) for s in mine)
    return EpochLoader(loader, steps)

