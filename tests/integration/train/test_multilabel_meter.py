"""The multi-label meter over two ranks (gloo, two spawned processes, no Ray): mAP and the best
thresholds are not sums, so every rank's scores are gathered; the figures equal one process's
over all the batches, with the ranks holding unequal shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hypernym.train.tasks.multilabel import BinaryCrossEntropy, MultiLabelMeter

pytestmark = pytest.mark.integration


def batches(rank: int | None):
    gen = torch.Generator().manual_seed(0)
    targets = (torch.rand(70, 6, generator=gen) < 0.3).float()
    logits = targets * 1.5 + torch.randn(70, 6, generator=gen)
    rows = range(70) if rank is None else (range(0, 45) if rank == 0 else range(45, 70))
    rows = list(rows)
    return [(logits[rows[i:i + 8]], targets[rows[i:i + 8]]) for i in range(0, len(rows), 8)]


def measure(rank: int | None) -> tuple[dict, dict]:
    meter = MultiLabelMeter(BinaryCrossEntropy(), 0.5, torch.device("cpu"))
    for logits, targets in batches(rank):
        meter.update(logits, targets)
    return meter.compute(), meter.per_class


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.save(measure(rank), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_meter_gathers_every_ranks_scores(tmp_path):
    # spawned, not forked: a fork of this process (its threads: Ray's, MLflow's) can deadlock
    mp.start_processes(_worker, args=(f"file://{tmp_path}/init", str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    whole, per_class = measure(None)
    assert 0.5 < whole["map"] < 1
    for rank in (0, 1):
        figures, classes = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        assert figures == pytest.approx(whole), rank
        for key, values in per_class.items():
            assert np.allclose(classes[key], values, equal_nan=True), (rank, key)
