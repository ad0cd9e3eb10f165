"""Where a trainer's batches come from: a prepared dataset's shards, or tensors in memory.

The core (`hypernym.train.core.Trainer`) asks its loaders for an epoch's training batches and
for one validation pass; both kinds below answer with `hypernym.data.reader.Sample` batches
(uint8 images, targets, sample ids, skipped counts) and know their length.

- `ShardLoaders`: the exactly-once shard reader (`hypernym.data.reader.make_loader`) over this
  rank's part of the epoch, for the recipe's ``data`` section and the task's sample codec.
- `TensorLoaders`: uint8 images and class indices held in memory (a notebook's tensors, the
  demo's few-shot subsets), batches drawn with replacement and random-resized crops.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torchvision.transforms import v2

from hypernym.config import DataSpec
from hypernym.data.dataset import Dataset
from hypernym.data.reader import EpochLoader, Sample, make_loader, steps_per_epoch
from hypernym.data.schedule import EpochProgress

__all__ = ["ShardLoaders", "TensorLoaders"]


class ShardLoaders:
    """A rank's loaders over a prepared dataset.

    Args:
        spec: the recipe's ``data`` section (batch size, image size, augmentation, workers).
        dataset: the opened dataset.
        codec: the task's sample codec.
    """

    def __init__(self, spec: DataSpec, dataset: Dataset, codec, *, rank: int = 0,
                 world: int = 1) -> None:
        self.spec, self.dataset, self.codec = spec, dataset, codec
        self.rank, self.world = rank, world

    def split_sizes(self, split: str = "train") -> list[int]:
        """Samples per shard of ``split`` (the sample ids' layout)."""
        return [s.samples for s in self.dataset.manifest.splits.get(split, [])]

    def steps_per_epoch(self) -> int:
        """Training batches every rank takes in a fresh epoch."""
        return steps_per_epoch(self.dataset.manifest, "train", world_size=self.world,
                               batch_size=self.spec.batch_size)

    def has(self, split: str) -> bool:
        return self.dataset.num_samples(split) > 0

    def train(self, epoch: int, progress: EpochProgress) -> EpochLoader:
        """The epoch's training batches not yet consumed (augmented, recycled image memory:
        the core copies each batch to the device before it takes the next)."""
        return self._loader("train", epoch=epoch, progress=progress, train=True)

    def eval(self, split: str = "val") -> EpochLoader:
        """One evaluation pass over this rank's part of ``split``."""
        return self._loader(split, epoch=0, progress=None, train=False)

    def _loader(self, split: str, *, epoch: int, progress, train: bool) -> EpochLoader:
        spec = self.spec
        return make_loader(
            self.dataset.manifest, self.dataset.root, split, rank=self.rank,
            world_size=self.world, epoch=epoch, batch_size=spec.batch_size,
            img_size=spec.img_size, train=train, seed=spec.seed,
            num_workers=spec.loader_workers, progress=progress, crop_scale=spec.crop_scale,
            rand_augment=spec.rand_augment if train else None, recycle=train,
            decode_on=spec.decode_on, shuffle_buffer=spec.shuffle_buffer, codec=self.codec)


class TensorLoaders:
    """Loaders over uint8 images in memory, for one process.

    Training draws ``batch_size`` samples with replacement per step (``steps`` per epoch),
    random-resized crops them (``crop_scale``) and, with ``flip``, mirrors half of them;
    evaluation reads ``val`` once, in order, uncropped.

    Args:
        images: uint8 [N, 3, H, W] training images (square: H == W).
        targets: [N] class indices.
        val: (images, targets) of the validation split, or None.
        seed: the draws' generator seed (batches and crops are a function of it and the epoch).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int,
                 steps: int, val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 crop_scale: tuple[float, float] = (0.08, 1.0), flip: bool = True,
                 seed: int = 0) -> None:
        self.images, self.targets, self.val = images, targets, val
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        crop = [v2.RandomResizedCrop(images.shape[-1], scale=crop_scale, antialias=True)]
        self.augment = v2.Compose(crop + ([v2.RandomHorizontalFlip()] if flip else []))

    def split_sizes(self, split: str = "train") -> list[int]:
        return [len(self.images)]

    def steps_per_epoch(self) -> int:
        return self.steps

    def has(self, split: str) -> bool:
        return split == "val" and self.val is not None and len(self.val[0]) > 0

    def train(self, epoch: int, progress: EpochProgress) -> _Batches:
        return _Batches(self._train_batches(epoch), self.steps)

    def eval(self, split: str = "val") -> _Batches:
        images, targets = self.val if self.val is not None else (self.images[:0],
                                                                 self.targets[:0])
        starts = range(0, len(images), self.batch_size)
        batches = (_batch(images[i:i + self.batch_size], targets[i:i + self.batch_size],
                          torch.arange(i, min(i + self.batch_size, len(images))))
                   for i in starts)
        return _Batches(batches, len(starts))

    def _train_batches(self, epoch: int) -> Iterator[Sample]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        for _ in range(self.steps):
            idx = torch.randint(len(self.images), (min(self.batch_size, len(self.images)),),
                                generator=gen)
            # v2's crops draw from torch's global generator: a forked one, seeded from ours,
            # so that the crops are a function of the seed and the training's draws are not
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
                images = torch.stack([self.augment(self.images[i]) for i in idx.tolist()])
            yield _batch(images, self.targets[idx], idx)


def _batch(images, targets, ids) -> Sample:
    return Sample(images, targets, ids, torch.zeros(len(ids), dtype=torch.int64))


class _Batches:
    def __init__(self, batches, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(self.batches)
