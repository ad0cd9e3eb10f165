"""Recipes are validated before anything starts, with errors that name the key and the fix."""

from __future__ import annotations

import pytest

from hypernym.config import (
    FinetuneRecipe,
    PrepareRecipe,
    PretrainRecipe,
    apply_overrides,
    load_recipe,
    parse_recipe,
)
from hypernym.errors import HypernymError

PRETRAIN = """
kind: pretrain
name: r
data: {path: /data/x, batch_size: 8}
model: {arch: resnet18}
optim: {lr: 0.01}
"""


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_recipe_with_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, PRETRAIN))
    assert isinstance(recipe, PretrainRecipe)
    assert recipe.data.batch_size == 8 and recipe.optim.lr == 0.01
    assert recipe.scaling.num_workers == 2 and recipe.train.epochs == 10


def test_overrides_parse_yaml_values_and_create_sections(tmp_path):
    recipe = load_recipe(
        write(tmp_path, PRETRAIN),
        ["optim.lr=0.5", "train.epochs=3", "scaling.use_gpu=true", "registry.name=bb"],
    )
    assert recipe.optim.lr == 0.5 and recipe.train.epochs == 3
    assert recipe.scaling.use_gpu is True and recipe.registry.name == "bb"


def test_unknown_key_names_path_and_allowed_keys(tmp_path):
    with pytest.raises(HypernymError) as err:
        load_recipe(write(tmp_path, PRETRAIN), ["optim.lrr=0.1"])
    msg = str(err.value)
    assert "optim.lrr" in msg and "did you mean 'lr'" in msg and "allowed keys:" in msg
    assert "weight_decay" in msg


def test_wrong_type_and_literal_list_allowed_values(tmp_path):
    with pytest.raises(HypernymError) as err:
        load_recipe(write(tmp_path, PRETRAIN), ["train.epochs=many", "optim.sched=linear"])
    msg = str(err.value)
    assert "train.epochs" in msg and "'many'" in msg
    assert "optim.sched" in msg and "'cosine'" in msg and "'step'" in msg


def test_unknown_timm_model_suggests_close_names(tmp_path):
    with pytest.raises(HypernymError) as err:
        load_recipe(write(tmp_path, PRETRAIN), ["model.arch=resnet51"])
    msg = str(err.value)
    assert "unknown timm model 'resnet51'" in msg and "resnet50" in msg


def test_missing_required_and_bad_kind(tmp_path):
    with pytest.raises(HypernymError, match="data: required key is missing"):
        parse_recipe({"kind": "pretrain", "name": "x", "model": {"arch": "resnet18"}})
    with pytest.raises(HypernymError, match="'kind' must be one of prepare, pretrain, finetune"):
        parse_recipe({"kind": "train"})


def test_register_names_and_reserved_aliases_rejected():
    base = {"kind": "pretrain", "name": "x", "data": {"path": "p"}, "model": {"arch": "resnet18"}}
    with pytest.raises(HypernymError, match="cannot contain"):
        parse_recipe({**base, "registry": {"name": "a/b"}})
    with pytest.raises(HypernymError, match="reserved"):
        parse_recipe({**base, "registry": {"name": "a", "alias": "v3"}})


def test_best_epoch_selection_metric():
    base = {"kind": "pretrain", "name": "x", "data": {"path": "p"}, "model": {"arch": "resnet18"}}
    reg = parse_recipe({**base, "registry": {"name": "a", "select": "best"}}).registry
    assert reg.candidates(ema=False) == {"model": "val/top1"}
    ema = parse_recipe({**base, "train": {"ema_decay": 0.99},
                        "registry": {"name": "a", "select": "best"}})
    # weights auto with an EMA: the model and the EMA compete on the same metric
    assert ema.registry.candidates(ema=True) == {"model": "val/top1", "ema": "val_ema/top1"}
    choice = ema.registry.choose({"val/top1": 0.317, "val_ema/top1": 0.083}, ema=True)
    assert choice["kind"] == "model" and choice["candidates"] == {"model": 0.317, "ema": 0.083}
    only_ema = ema.registry.model_copy(update={"weights": "ema"})
    assert only_ema.candidates(ema=True) == {"ema": "val_ema/top1"}
    with pytest.raises(HypernymError, match="must be a validation metric"):
        parse_recipe({**base, "registry": {"select": "best", "metric": "train/loss"}})
    with pytest.raises(HypernymError, match="needs train.ema_decay"):
        parse_recipe({**base, "registry": {"select": "best", "metric": "val_ema/top5"}})


def test_prepare_and_finetune_kinds():
    prep = parse_recipe({"kind": "prepare", "source": "s", "output": "o"})
    assert isinstance(prep, PrepareRecipe) and prep.resize == "squish" and prep.val_per_class == 50
    assert prep.min_per_class == 500 and prep.image_size == 224  # the 21K-P defaults
    fine = parse_recipe({"kind": "finetune", "name": "f", "data": {"path": "p"},
                         "model": {"arch": "resnet18"}, "backbone": "bb@candidate"})
    assert isinstance(fine, FinetuneRecipe) and fine.mode == "full"


def test_bad_set_syntax_and_missing_file(tmp_path):
    with pytest.raises(HypernymError, match="key.path=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(HypernymError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(HypernymError, match="not valid YAML"):
        load_recipe(write(tmp_path, "a: [unclosed"))


def test_finetune_mode_keys():
    base = {"kind": "finetune", "name": "x", "backbone": None, "data": {"path": "p"},
            "model": {"arch": "resnet18"}}
    assert parse_recipe({**base, "mode": "partial", "partial_blocks": 2}).partial_blocks == 2
    with pytest.raises(HypernymError, match="partial_blocks"):
        parse_recipe({**base, "mode": "partial"})
    with pytest.raises(HypernymError, match="partial_blocks"):
        parse_recipe({**base, "partial_blocks": 2})
    with pytest.raises(HypernymError, match="moot"):
        parse_recipe({**base, "mode": "linear", "head_warmup_epochs": 1})
    with pytest.raises(HypernymError, match="fewer than train.epochs"):
        parse_recipe({**base, "head_warmup_epochs": 3, "train": {"epochs": 3}})
    with pytest.raises(HypernymError, match="head_init"):
        parse_recipe({**base, "head_init": "pretrained"})


def test_a_resolved_recipe_parses_again():
    """`hypernym submit`, the demo and MLflow's recipe.json write the resolved recipe, every key
    at its value: it must validate again (a schedule's own keys at their defaults included)."""
    raw = {"kind": "finetune", "name": "x", "data": {"path": "/tmp/x"},
           "model": {"arch": "resnet10t"}, "backbone": None, "optim": {"sched": "step",
                                                                    "decay_epochs": 3}}
    recipe = parse_recipe(raw)
    assert parse_recipe(recipe.model_dump(mode="json")) == recipe
    cosine = parse_recipe({**raw, "optim": {"sched": "cosine"}})
    assert parse_recipe(cosine.model_dump(mode="json")) == cosine
