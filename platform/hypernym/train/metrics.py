"""Statistics of the batches training consumed: bad samples skipped, and how mixed they were.

`BatchStats` accumulates them on each rank as the optimizer steps; its epoch figures are summed
over the ranks. ``data/batch_mixing`` near 1.0 says the reader's shuffle (shard order, sample
buffer) gives batches as class-mixed as random draws; well below 1.0 says it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hypernym.train.distributed import all_reduce_sum

__all__ = ["BatchStats", "batch_mixing"]


class BatchStats:
    """Skipped bad samples, distinct classes per batch, and the label histogram, of every batch
    an optimizer step trained on (a `hypernym.data.reader.Sample` batch).

    Args:
        labels_of: a batch's targets -> its class indices, or None for targets without
            (the class figures are then left out).
    """

    def __init__(self, num_classes: int, *, batch_size: int,
                 labels_of: Callable[[Any], torch.Tensor | None] = lambda target: target) -> None:
        self.batch_size, self.labels_of = batch_size, labels_of
        self.skipped = 0
        self.classes = torch.zeros(num_classes, dtype=torch.float64)
        self.distinct, self.batches = 0.0, 0

    def add(self, epoch: int, step: int, batches: list) -> None:
        """Count the batches (one per accumulation step) of optimizer step ``step``."""
        for batch in batches:
            self.skipped += int(batch.skipped.sum())
            labels = self.labels_of(batch.target)
            if labels is None:
                continue
            self.classes += torch.bincount(labels, minlength=len(self.classes)).double()
            self.distinct += len(torch.unique(labels))
            self.batches += 1

    def epoch_metrics(self, device: torch.device) -> dict[str, float]:
        """``data/skipped_samples`` and ``data/batch_mixing`` over all ranks (a collective,
        run on ``device``: NCCL takes no CPU tensors)."""
        sums = torch.cat([torch.tensor([self.skipped, self.distinct, self.batches],
                                       dtype=torch.float64), self.classes])
        skipped, distinct, batches, *counts = all_reduce_sum(sums.to(device)).cpu().tolist()
        if not batches:  # targets without class indices
            return {"data/skipped_samples": skipped}
        return {"data/skipped_samples": skipped,
                "data/batch_mixing": batch_mixing(distinct / max(batches, 1), counts,
                                                  self.batch_size)}


def batch_mixing(distinct_per_batch: float, class_counts: Sequence[int], batch_size: int) -> float:
    """How mixed the batches were: their mean number of distinct classes over what batches of
    ``batch_size`` drawn independently from the same class frequencies would hold on average
    (``sum_c 1 - (1 - p_c)^B``). About 1.0: as mixed as random draws; well below: batches are
    dominated by few classes (shards read in order, a buffer too small)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.sum() == 0 or distinct_per_batch <= 0:
        return 0.0
    p = counts / counts.sum()
    expected = float(np.sum(1.0 - (1.0 - p) ** batch_size))
    return distinct_per_batch / expected
