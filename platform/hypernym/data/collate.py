"""Collating a loader worker's batches into shared memory that it reuses.

DataLoader's default collate gives every batch of a worker a new shared-memory segment: the
kernel maps and zeroes 9.6 MB per 64x224x224 batch, and the main process maps it again. That cost
9.5 ms of system time per batch, 10% of the reader's CPU per image (measured in
tests/benchmarks/loader.py's setting). Here each worker writes into a small ring of buffers it
allocates once, and the main process keeps the mapping (torch caches shared storages by file).

Batches come out in channels-last memory (NCHW shape, NHWC strides), the layout timm trains
in on GPUs; `.float()`, `.to(device)` and normalisation keep it.

The price is a contract on the images (labels, ids and counts are fresh every batch): DataLoader
keeps `prefetch_factor` tasks out per worker and sends a new one for each batch it hands out, so a
worker's batch n is overwritten once it has been sent the task for batch n + slots, that is once
the consumer has taken that worker's batch n + slots - prefetch_factor. The reader sizes the ring
(prefetch + 3) so that the current and the previous batch stay intact with one batch of slack for
workers whose quotas differ by a batch. The training loop moves or normalises each batch before it
takes the next; `make_loader(recycle=False)` (the default) is for code that keeps batches around.
"""

from __future__ import annotations

import torch
from torch.utils.data import default_collate, get_worker_info

__all__ = ["RecycledBatches", "with_numbers"]


def with_numbers(samples: list, images):
    """The batch of ``samples`` with the given images and their labels, ids and skip counts.
    Those three share one small tensor: one shared segment (and one fd passed) per batch."""
    numbers = torch.tensor([[s.label for s in samples], [s.id for s in samples],
                            [s.skipped for s in samples]], dtype=torch.int64)
    return type(samples[0])(images, numbers[0], numbers[1], numbers[2])


class RecycledBatches:
    """A DataLoader ``collate_fn`` for `hypernym.data.reader.Sample`s.

    Args:
        slots: image buffers per worker and batch shape: the loader's prefetch_factor plus the
            batches the consumer holds at once, plus slack (see above).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._rings: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._turn: dict[tuple[int, ...], int] = {}

    def __call__(self, samples: list):
        if get_worker_info() is None:  # num_workers=0: nothing crosses a process boundary
            return default_collate(samples)
        channels, height, width = samples[0].image.shape
        # Stored HWC, handed out as an NCHW view in channels-last memory: the transforms give
        # HWC pixels, so this is a plain copy per image (a transposing one costs 0.1 ms).
        images = self._buffer((len(samples), height, width, channels))
        for row, sample in zip(images, samples, strict=True):
            row.copy_(sample.image.permute(1, 2, 0))
        return with_numbers(samples, images.permute(0, 3, 1, 2))

    def _buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        ring = self._rings.setdefault(shape, [])
        turn = self._turn.get(shape, 0)
        self._turn[shape] = turn + 1
        if len(ring) < self.slots:
            ring.append(torch.empty(shape, dtype=torch.uint8).share_memory_())
            return ring[-1]
        return ring[turn % self.slots]
