"""Recycled batch memory on real DataLoader workers: the same batches as the default collate,
the current and previous batch intact while the consumer holds them, and the memory really
reused (a batch kept longer is overwritten, which is the documented contract)."""

from __future__ import annotations

import torch

from hypernym.data.reader import make_loader
from tests.unit.data.test_reader import make_dataset

SIZES = [40, 33, 50, 37]  # 160 samples; each sample's image is a flat shade of its own


def batches(manifest, root, *, recycle: bool, workers: int = 2):
    torch.manual_seed(0)  # DataLoader draws the workers' augmentation seeds from it
    return make_loader(manifest, str(root), "train", rank=0, world_size=1, epoch=1,
                       batch_size=4, img_size=8, train=True, seed=5, num_workers=workers,
                       recycle=recycle)


def test_recycled_batches_equal_fresh_ones_and_hold_for_two_steps(tmp_path):
    manifest = make_dataset(tmp_path, SIZES)
    fresh = [tuple(t.clone() for t in batch) for batch in batches(manifest, tmp_path,
                                                                  recycle=False)]
    kept, copies = [], []
    for batch in batches(manifest, tmp_path, recycle=True):
        if kept:  # the previous batch is still intact now that this one has arrived
            assert torch.equal(kept[-1][0], copies[-1][0])
        kept.append(batch)
        copies.append(tuple(t.clone() for t in batch))
    assert len(copies) == len(fresh) == 40
    for mine, theirs in zip(copies, fresh, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    # Kept for the whole epoch, the first batches were overwritten: the memory was reused...
    assert not all(torch.equal(k[0], c[0]) for k, c in zip(kept, copies, strict=True))
    # ... but never labels, ids or skip counts, which are fresh every batch.
    assert all(torch.equal(k[2], c[2]) and torch.equal(k[1], c[1])
               for k, c in zip(kept, copies, strict=True))


def test_without_workers_recycling_is_off(tmp_path):
    manifest = make_dataset(tmp_path, SIZES)
    kept = list(batches(manifest, tmp_path, recycle=True, workers=0))
    again = list(batches(manifest, tmp_path, recycle=False, workers=0))
    assert len(kept) == len(again) == 40
    assert all(torch.equal(a[0], b[0]) for a, b in zip(kept, again, strict=True))
