"""The sweep's space grammar: typed samplers over recipe keys, mapped to ray.tune search spaces,
with clear errors for keys the recipe lacks and values it would reject."""

from __future__ import annotations

import pytest

from hypernym.errors import HypernymError
from hypernym.transfer.space import parse_space, to_tune, with_values

RECIPE = {"kind": "finetune", "name": "s", "backbone": None, "data": {"path": "d"},
          "model": {"arch": "resnet10t"}, "train": {"epochs": 3}}


def test_samplers_map_to_tune():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space({"optim.lr": {"loguniform": [1e-4, 1e-2]},
                         "train.epochs": {"choice": [2, 3]},
                         "optim.weight_decay": {"quniform": [0.0, 0.1, 0.01]},
                         "data.batch_size": {"randint": [8, 33]},
                         "mode": {"grid": ["linear", "full"]}}, RECIPE)
    tune = to_tune(space)
    assert isinstance(tune["optim.lr"], Float) and isinstance(tune["train.epochs"], Categorical)
    assert isinstance(tune["data.batch_size"], Integer)
    assert tune["mode"] == {"grid_search": ["linear", "full"]}
    raw = with_values(RECIPE, {"optim.lr": 0.003, "mode": "linear"})
    assert raw["optim"]["lr"] == 0.003 and raw["mode"] == "linear" and "optim" not in RECIPE


@pytest.mark.parametrize(("space", "message"), [
    ({"optim.lrr": {"uniform": [0.1, 0.2]}}, "no key 'optim.lrr' .*did you mean 'optim.lr'"),
    ({"optim": {"choice": [1]}}, "is a section"),
    ({"optim.lr": {"logunifrom": [1e-4, 1e-2]}}, "unknown sampler .*'loguniform'"),
    ({"optim.lr": {"loguniform": [1e-2, 1e-4]}}, "low < high"),
    ({"optim.lr": {"loguniform": [0, 1e-2]}}, "low > 0"),
    ({"optim.lr": [1e-3]}, "expected"),
    ({"optim.lr": {"uniform": [-1.0, 0.1]}}, "rejects optim.lr=-1.0"),
    ({"mode": {"choice": ["full", "probe"]}}, "rejects mode='probe'"),
    ({"name": {"choice": ["a", "b"]}}, "the sweep's own"),
    ({}, "maps recipe keys"),
])
def test_bad_spaces_say_what_is_wrong(space, message):
    with pytest.raises(HypernymError, match=message):
        parse_space(space, RECIPE, source="space.yaml")
