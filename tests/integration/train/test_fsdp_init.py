"""FSDP2 starts every rank from the same model: two ranks (gloo, two processes) shard a model
built by the core, and the full weights they hold together equal the model one process builds
from the same recipe. Ranks seeded apart would each shard their own random init."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hypernym.data.dataset import Dataset
from hypernym.data.manifest import ClassInfo, Manifest
from hypernym.train.core import Trainer
from hypernym.train.distributed import is_sharded, state_dicts
from tests.unit.train.helpers import ListLoaders, unit_recipe

pytestmark = pytest.mark.integration

CLASSES = 5


def recipe():
    return unit_recipe(img_size=16, optim={"sched": "cosine"}, scaling={"strategy": "fsdp"})


def dataset() -> Dataset:
    classes = [ClassInfo(index=i, id=f"c{i}", name=f"c{i}") for i in range(CLASSES)]
    return Dataset("/unused", Manifest(name="t", recipe={}, classes=classes, splits={},
                                       fingerprint="-"))


def loaders() -> ListLoaders:
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    return ListLoaders([(images, torch.zeros(4, dtype=torch.int64))])


def build(rank: int, world: int) -> Trainer:
    return Trainer.from_recipe(recipe(), dataset=dataset(), loaders=loaders(), rank=rank,
                               world=world)


def sharded_init(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        trainer = build(rank, world)
        assert is_sharded(trainer.state.model)
        full, _ = state_dicts(trainer.state.model, trainer.state.optimizer)  # a collective
        if rank == 0:
            torch.save(full, out)
    finally:
        dist.destroy_process_group()


def test_sharded_init_equals_one_process_init(tmp_path):
    out = tmp_path / "fsdp.pt"
    mp.spawn(sharded_init, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    sharded = torch.load(out, weights_only=True)
    single = build(0, 1).state.model.state_dict()
    assert sharded.keys() == single.keys()
    for name, value in single.items():
        assert torch.equal(sharded[name], value), name
