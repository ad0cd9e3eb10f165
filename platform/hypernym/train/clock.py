"""An epoch's optimizer steps as groups of microbatches, timed.

`StepClock.groups` cuts a loader of known length into accumulation groups: ``accum``
microbatches per optimizer step, the epoch's last group shorter when the length is not a
multiple. A group pulls its microbatches lazily (the reader may recycle a batch's memory once the
next one is taken, `hypernym.data.collate`). The clock measures how long the loop waited for data,
and the images trained on, per epoch and per logging window: the epoch's figures hide stalls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

__all__ = ["MicrobatchGroup", "StepClock"]


class MicrobatchGroup:
    """The microbatches of one optimizer step; ``size`` is known before the first is pulled."""

    def __init__(self, clock: StepClock, batches: Iterator, size: int) -> None:
        self.clock, self.batches, self.size = clock, batches, size

    def __iter__(self):
        for _ in range(self.size):
            yield self.clock.pull(self.batches)


class StepClock:
    """Data wait and throughput of one epoch (``world`` ranks training alike)."""

    def __init__(self, *, world: int = 1) -> None:
        self.world = world
        self.start = self.tick = time.perf_counter()
        self.wait = 0.0
        self.images = 0
        self.batches = 0
        self._window = (self.start, 0, 0.0)  # start, images, wait

    def groups(self, loader, accum: int) -> Iterator[MicrobatchGroup]:
        """``len(loader)`` batches as groups of ``accum`` (the last may be shorter)."""
        remaining = len(loader)
        batches = iter(loader)
        self.tick = time.perf_counter()
        while remaining > 0:
            size = min(accum, remaining)
            yield MicrobatchGroup(self, batches, size)
            remaining -= size

    def pull(self, batches: Iterator):
        """The next microbatch, timing the wait for it."""
        waited_from = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            raise RuntimeError("the loader yielded fewer batches than its length: every rank "
                               "must take the same number of optimizer steps") from None
        now = time.perf_counter()
        self.wait += now - waited_from
        self.images += len(batch.id)
        self.batches += 1
        return batch

    def window_rates(self) -> dict[str, float]:
        """Throughput and data-wait fraction since the last call (or the epoch's start)."""
        start, images, wait = self._window
        now = time.perf_counter()
        elapsed = max(now - start, 1e-9)
        self._window = (now, self.images, self.wait)
        return {"train/images_per_s_window": (self.images - images) * self.world / elapsed,
                "train/data_wait_frac_window": (self.wait - wait) / elapsed}

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's throughput (over all ranks) and data-wait fraction."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"train/images_per_s": self.images * self.world / elapsed,
                "train/data_wait_frac": self.wait / elapsed}
