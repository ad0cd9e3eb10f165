"""Collating a loader's samples into batches, and reusing a worker's image memory.

Images: DataLoader's default collate gives every batch of a worker a new shared-memory segment:
the kernel maps and zeroes 9.6 MB per 64x224x224 batch, and the main process maps it again. That
cost 9.5 ms of system time per batch, 10% of the reader's CPU per image (measured in
tests/benchmarks/loader.py's setting). With ``slots`` each worker writes into a small ring of
buffers it allocates once, and the main process keeps the mapping (torch caches shared storages
by file). Batches come out in channels-last memory (NCHW shape, NHWC strides), the layout timm
trains in on GPUs; `.float()`, `.to(device)` and normalisation keep it.

The price of the ring is a contract on the images (targets, ids and counts are fresh every
batch): DataLoader keeps `prefetch_factor` tasks out per worker and sends a new one for each
batch it hands out, so a worker's batch n is overwritten once it has been sent the task for batch
n + slots, that is once the consumer has taken that worker's batch n + slots - prefetch_factor.
The reader sizes the ring (prefetch + 3) so that the current and the previous batch stay intact
with one batch of slack for workers whose quotas differ by a batch. The training loop moves or
normalises each batch before it takes the next; `make_loader(recycle=False)` (the default) is
for code that keeps batches around.

Targets are the task codec's (`hypernym.data.codec`): plain ints are packed with the sample ids
and skip counts into one small tensor (one shared segment, and one fd passed, per batch); other
targets are collated by the codec.
"""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from hypernym.data.device_decode import encoded_batch

__all__ = ["Collate", "with_numbers"]


def with_numbers(samples: list, images, codec):
    """The batch of ``samples`` with the given images, their targets, ids and skip counts."""
    if codec.packs_ints:
        numbers = torch.tensor([[s.target for s in samples], [s.id for s in samples],
                                [s.skipped for s in samples]], dtype=torch.int64)
        return type(samples[0])(images, numbers[0], numbers[1], numbers[2])
    numbers = torch.tensor([[s.id for s in samples], [s.skipped for s in samples]],
                           dtype=torch.int64)
    return type(samples[0])(images, codec.collate([s.target for s in samples]), numbers[0],
                            numbers[1])


class Collate:
    """A DataLoader ``collate_fn`` for `hypernym.data.reader.Sample`s.

    Args:
        codec: the task's sample codec (it collates non-int targets).
        encoded: the images are `hypernym.data.device_decode.Encoded` (device decode).
        slots: image buffers per worker and batch shape (0: a new tensor per batch): the
            loader's prefetch_factor plus the batches the consumer holds at once, plus slack.
    """

    def __init__(self, codec, *, encoded: bool = False, slots: int = 0) -> None:
        self.codec, self.encoded, self.slots = codec, encoded, slots
        self._rings: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._turn: dict[tuple[int, ...], int] = {}

    def __call__(self, samples: list):
        if self.encoded:
            return with_numbers(samples, encoded_batch([s.image for s in samples]), self.codec)
        if not self.slots or get_worker_info() is None:  # nothing crosses a process boundary
            return with_numbers(samples, torch.stack([s.image for s in samples]), self.codec)
        channels, height, width = samples[0].image.shape
        # Stored HWC, handed out as an NCHW view in channels-last memory: the transforms give
        # HWC pixels, so this is a plain copy per image (a transposing one costs 0.1 ms).
        images = self._buffer((len(samples), height, width, channels))
        for row, sample in zip(images, samples, strict=True):
            row.copy_(sample.image.permute(1, 2, 0))
        return with_numbers(samples, images.permute(0, 3, 1, 2), self.codec)

    def _buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        ring = self._rings.setdefault(shape, [])
        turn = self._turn.get(shape, 0)
        self._turn[shape] = turn + 1
        if len(ring) < self.slots:
            ring.append(torch.empty(shape, dtype=torch.uint8).share_memory_())
            return ring[-1]
        return ring[turn % self.slots]
