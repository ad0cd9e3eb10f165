"""The reader's schedule is a pure function, balanced across ranks (no processes needed)."""

from __future__ import annotations

import itertools

import pytest

from hypernym.data.reader import assign_shards


@pytest.mark.parametrize("shards,world", list(itertools.product([1, 2, 3, 7, 16], [1, 2, 3, 8])))
def test_training_assignment_partitions_and_is_deterministic(shards, world):
    for epoch in range(3):
        got = [assign_shards(shards, seed=5, epoch=epoch, rank=r, world_size=world, shuffle=True)
               for r in range(world)]
        again = [assign_shards(shards, seed=5, epoch=epoch, rank=r, world_size=world,
                               shuffle=True) for r in range(world)]
        assert got == again
        assert all(got), "every rank gets at least one shard to read"
        if shards >= world:  # a partition: each shard read by exactly one rank
            assert sorted(itertools.chain(*got)) == list(range(shards))
            sizes = [len(g) for g in got]
            assert max(sizes) - min(sizes) <= 1


def test_order_changes_between_epochs_but_not_between_calls():
    orders = {tuple(assign_shards(16, seed=0, epoch=e, rank=0, world_size=1, shuffle=True))
              for e in range(5)}
    assert len(orders) > 1
    assert assign_shards(16, seed=1, epoch=0, rank=0, world_size=1, shuffle=True) != \
        assign_shards(16, seed=2, epoch=0, rank=0, world_size=1, shuffle=True)


def test_evaluation_reads_each_shard_once():
    got = [assign_shards(3, seed=0, epoch=0, rank=r, world_size=4, shuffle=False)
           for r in range(4)]
    assert sorted(itertools.chain(*got)) == [0, 1, 2]
    assert got[3] == []
