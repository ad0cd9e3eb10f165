"""BiT-HyperRule: a fine-tune that sets no train.epochs gets its budget from the dataset size."""

from __future__ import annotations

from hypernym.config import parse_recipe
from hypernym.train.budget import bit_hyperrule, bit_steps

BASE = {"kind": "finetune", "name": "b", "backbone": None, "data": {"path": "d"},
        "model": {"arch": "resnet10t"}}


def test_the_rule_by_dataset_size():
    assert bit_steps(19_999) == (500, 0.0)
    assert bit_steps(20_000) == (10_000, 0.1)
    assert bit_steps(499_999) == (10_000, 0.1)
    assert bit_steps(500_000) == (20_000, 0.1)


def test_applies_only_without_train_epochs():
    small, note = bit_hyperrule(parse_recipe(BASE), train_images=1_500, updates_per_epoch=23)
    assert small.train.epochs == 22 and small.train.mixup_alpha == 0  # ceil(500 / 23)
    assert note.startswith("BiT-HyperRule budget: 1500 training images -> 500 steps")
    big, _ = bit_hyperrule(parse_recipe(BASE), train_images=50_000, updates_per_epoch=400)
    assert big.train.epochs == 25 and big.train.mixup_alpha == 0.1
    mine, _ = bit_hyperrule(parse_recipe({**BASE, "train": {"cutmix_alpha": 1.0}}),
                            train_images=50_000, updates_per_epoch=400)
    assert mine.train.mixup_alpha == 0 and mine.train.cutmix_alpha == 1.0
    fixed = parse_recipe({**BASE, "train": {"epochs": 4}})
    assert bit_hyperrule(fixed, train_images=1_500, updates_per_epoch=23) == (fixed, None)
    pretrain = parse_recipe({k: v for k, v in BASE.items() if k != "backbone"}
                            | {"kind": "pretrain"})
    assert bit_hyperrule(pretrain, train_images=1_500, updates_per_epoch=23)[1] is None
