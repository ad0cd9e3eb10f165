"""Exactly once across a restart, on real shards and real DataLoaders (with worker processes):
a run killed mid-epoch and resumed from its last checkpoint, with the same or another number of
ranks and loader workers, trains every sample of the epoch once (none twice, none skipped) but the
documented remainder. Delivery is counted on the training side: what the loaders had prefetched
or held in their shuffle buffers at the kill is not consumed."""

from __future__ import annotations

import pytest

from hypernym.data.reader import make_loader
from hypernym.data.schedule import EpochProgress
from tests.unit.data.test_reader import make_dataset

SIZES = [13, 7, 20, 1, 16, 9]  # 66 samples, uneven shards


def train_steps(manifest, root, *, world, workers, batch, epoch, progress=None, stop_after=None):
    """Ids trained at each step (all ranks together), as DDP ranks in lockstep would take them."""
    loaders = [make_loader(manifest, str(root), "train", rank=r, world_size=world, epoch=epoch,
                           batch_size=batch, img_size=8, train=True, seed=3,
                           num_workers=workers, progress=progress, recycle=True)
               for r in range(world)]
    steps = len(loaders[0])
    assert all(len(loader) == steps for loader in loaders)
    iters = [iter(loader) for loader in loaders]
    trained = []
    for _ in range(steps if stop_after is None else min(stop_after, steps)):
        ids = []
        for it in iters:
            images, labels, sample_ids, _ = next(it)
            assert images.shape[0] == batch and labels.tolist() == sample_ids.tolist()
            ids += sample_ids.tolist()
        trained.append(ids)
    if stop_after is None:  # a finished epoch: every rank's loader is exhausted
        for it in iters:
            assert next(it, None) is None
    del iters  # the "kill": loader workers and whatever they prefetched are gone
    return trained, steps


@pytest.mark.parametrize("before,after", [
    ((2, 0), (2, 0)),  # same world size
    ((2, 2), (3, 0)),  # more ranks, no loader workers
    ((3, 1), (1, 2)),  # fewer ranks, more loader workers
])
def test_killed_and_resumed_epoch_trains_each_sample_once(tmp_path, before, after):
    manifest = make_dataset(tmp_path, SIZES)
    batch, epoch, total = 3, 4, sum(SIZES)
    first, steps = train_steps(manifest, tmp_path, world=before[0], workers=before[1],
                               batch=batch, epoch=epoch, stop_after=6)
    assert steps > 6
    checkpointed = first[:4]  # checkpoint after step 4; steps 5-6 trained, then lost in the kill

    progress = EpochProgress(SIZES, epoch)
    for ids in checkpointed:
        progress.mark(ids)
    restored = EpochProgress(SIZES)
    restored.load_state_dict(progress.state_dict())  # what the checkpoint holds
    second, resumed_steps = train_steps(manifest, tmp_path, world=after[0], workers=after[1],
                                        batch=batch, epoch=epoch, progress=restored)

    trained = [i for ids in checkpointed + second for i in ids]
    assert len(trained) == len(set(trained)), "a sample was trained twice in the epoch"
    left = total - len(trained)  # the remainder: fewer than one step of the resumed run
    assert 0 <= left < after[0] * batch
    assert resumed_steps == (total - restored.count) // (after[0] * batch)


def test_a_resumed_run_starts_the_next_epoch_afresh(tmp_path):
    manifest = make_dataset(tmp_path, SIZES)
    progress = EpochProgress(SIZES, epoch=0)
    progress.mark(range(30))
    progress.start(1)  # the loop does this when the resumed epoch ends
    trained, steps = train_steps(manifest, tmp_path, world=2, workers=0, batch=3, epoch=1,
                                 progress=progress)
    assert steps == sum(SIZES) // 6
    assert len({i for ids in trained for i in ids}) == steps * 6


def test_uninterrupted_epochs_differ_and_repeat(tmp_path):
    manifest = make_dataset(tmp_path, SIZES)
    run = [train_steps(manifest, tmp_path, world=2, workers=0, batch=3, epoch=e)[0]
           for e in (0, 1, 0)]
    assert run[0] == run[2] and run[0] != run[1]
    mixed = [len({i // 10 for i in ids}) for ids in run[0]]  # rough proxy: distinct id decades
    assert sum(mixed) / len(mixed) > 1.5, "batches should mix samples of several shards"
