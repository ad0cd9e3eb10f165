"""The epoch schedule is a pure function, balanced, and reads every sample at most once; the
progress record round-trips. Exhaustive over small cases, no processes needed."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from hypernym.data.schedule import EpochProgress, plan_epoch, shard_order

SIZES = [[5], [1] * 9, [3, 9, 1], [7, 7, 7, 7], [2, 11, 0, 6, 9], [12], [0, 0, 4], [100, 3, 50]]


def read_positions(slots, remaining):
    """(shard, position among its remaining samples) for every sample any slot reads."""
    return [(p.shard, i) for slot in slots for p in slot.pieces for i in range(p.start, p.stop)]


@pytest.mark.parametrize("sizes,world,workers,batch", [
    (s, w, k, b) for s in SIZES for w, k, b in itertools.product([1, 2, 3, 8], [1, 2, 3], [1, 2, 5])
])
def test_training_plan_is_balanced_and_reads_each_sample_once(sizes, world, workers, batch):
    slots, steps = plan_epoch(sizes, seed=7, epoch=3, world_size=world, num_workers=workers,
                              batch_size=batch, train=True)
    assert steps == sum(sizes) // (world * batch)
    assert [(s.rank, s.worker) for s in slots] == [
        (r, w) for r in range(world) for w in range(workers)]
    for rank in range(world):
        mine = [s for s in slots if s.rank == rank]
        # every rank: exactly `steps` full batches, dealt over its workers in whole batches,
        # round-robin as DataLoader takes them (worker w gets batch w, w + k, ...)
        assert sum(s.quota for s in mine) == steps * batch
        assert [s.quota // batch for s in mine] == [
            len(range(w, steps, workers)) for w in range(workers)]
        assert all(s.size >= s.quota for s in mine)
    read = read_positions(slots, sizes)
    assert sorted(read) == [(s, i) for s, n in enumerate(sizes) for i in range(n)]
    # the remainder is spread: no slot reads more than one batch plus one sample beyond its quota
    assert all(s.size - s.quota <= batch + 1 for s in slots) or steps == 0
    again, _ = plan_epoch(sizes, seed=7, epoch=3, world_size=world, num_workers=workers,
                          batch_size=batch, train=True)
    assert again == slots


@pytest.mark.parametrize("sizes,world,workers", itertools.product(SIZES, [1, 2, 3, 8], [1, 2]))
def test_evaluation_plan_reads_every_sample_once_in_manifest_order(sizes, world, workers):
    slots, steps = plan_epoch(sizes, seed=7, epoch=0, world_size=world, num_workers=workers,
                              batch_size=4, train=False)
    assert steps == 0 and all(s.quota is None for s in slots)
    assert read_positions(slots, sizes) == [(s, i) for s, n in enumerate(sizes) for i in range(n)]
    assert max(s.size for s in slots) - min(s.size for s in slots) <= 1


def test_order_changes_between_epochs_and_seeds_but_not_between_calls():
    orders = {tuple(shard_order(16, seed=0, epoch=e, shuffle=True)) for e in range(5)}
    assert len(orders) == 5
    assert shard_order(16, seed=1, epoch=0, shuffle=True) == \
        shard_order(16, seed=1, epoch=0, shuffle=True)
    assert shard_order(16, seed=1, epoch=0, shuffle=True) != \
        shard_order(16, seed=2, epoch=0, shuffle=True)
    assert shard_order(5, seed=1, epoch=4, shuffle=False) == list(range(5))


def test_a_resumed_epoch_plans_only_what_is_left():
    sizes = [7, 0, 5, 9]
    progress = EpochProgress(sizes, epoch=2)
    rng = random.Random(0)
    done = rng.sample(range(21), 8)
    progress.mark(done)
    left = progress.remaining()
    assert left == [7 - sum(d < 7 for d in done), 0, 5 - sum(7 <= d < 12 for d in done),
                    9 - sum(d >= 12 for d in done)]
    slots, steps = plan_epoch(left, seed=1, epoch=2, world_size=3, num_workers=2, batch_size=2,
                              train=True)
    assert steps == 13 // 6
    ids = {int(progress.offsets[p.shard]) + int(progress.unconsumed(p.shard)[i])
           for slot in slots for p in slot.pieces for i in range(p.start, p.stop)}
    assert ids == set(range(21)) - set(done)


def test_progress_round_trips_and_guards_its_dataset():
    progress = EpochProgress([3, 4, 0, 10], epoch=5)
    progress.mark([0, 4, 16, 16])
    state = progress.state_dict()
    assert str(state["bits"].dtype) == "torch.uint8" and state["bits"].numel() == 3
    again = EpochProgress([3, 4, 0, 10])
    again.load_state_dict(state)
    assert again.epoch == 5 and again.count == 3
    assert np.array_equal(again.consumed, progress.consumed)
    again.start(5)  # resuming the same epoch keeps its progress
    assert again.count == 3
    again.start(6)
    assert again.count == 0
    with pytest.raises(ValueError, match="resume on the same dataset"):
        EpochProgress([3, 4]).load_state_dict(state)
    with pytest.raises(ValueError, match="outside"):
        progress.mark([17])


def test_batch_mixing_tells_random_batches_from_sorted_ones():
    from hypernym.train.metrics import batch_mixing

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 50, (64 * 40,), generator=gen)
    counts = torch.bincount(labels, minlength=50).tolist()

    def distinct(order):
        return sum(len(torch.unique(b)) for b in order.split(64)) / 40

    assert batch_mixing(distinct(labels), counts, 64) == pytest.approx(1.0, abs=0.05)
    assert batch_mixing(distinct(labels.sort().values), counts, 64) < 0.2
    assert batch_mixing(0.0, counts, 64) == 0.0
