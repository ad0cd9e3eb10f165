"""``train.distill`` in a recipe, and the class checks that refuse a teacher of other classes or
another hierarchy (pure: a dataset's manifest built here; the registry's side is in
tests/integration/train/test_distill.py)."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from hypernym.data.dataset import Dataset
from hypernym.data.manifest import ClassInfo, Manifest
from hypernym.errors import HypernymError
from hypernym.train.distill.teacher import check_hierarchy, class_order


def recipe(distill):
    return parse_recipe({"kind": "pretrain", "name": "s", "data": {"path": "/d"},
                         "model": {"arch": "resnet10t"}, "train": {"distill": distill}})


def test_the_section_is_validated_with_the_key_path():
    assert recipe({"teacher": "t@champion"}).train.distill.alpha == 0.5
    for bad, needles in [
        ({}, ["train.distill", "set a teacher", "or a store"]),
        ({"teacher": "t", "loss": "semantic", "temperature": 2.0},
         ["defined at temperature 1", "semantic_kl"]),
        ({"teacher": "t", "tempreature": 2}, ["train.distill.tempreature", "'temperature'",
                                             "allowed keys: teacher, store, loss"]),
        ({"teacher": "t", "alpha": 1.0}, ["train.distill.alpha"]),
        ({"teacher": "t", "loss": "mse"}, ["train.distill.loss", "'kl'", "'semantic_kl'"]),
    ]:
        with pytest.raises(HypernymError) as err:
            recipe(bad)
        for needle in needles:
            assert needle in str(err.value), (needle, str(err.value))


def dataset(ids, paths) -> Dataset:
    manifest = Manifest(name="pets", recipe={}, fingerprint="f", splits={},
                        classes=[ClassInfo(index=i, id=c, name=c) for i, c in enumerate(ids)],
                        hierarchy={"kind": "custom", "class_paths": paths})
    return Dataset(root="/d", manifest=manifest)


IDS = ["animal", "dog", "cat", "pug"]
PATHS = {"animal": ["animal"], "dog": ["animal", "dog"], "cat": ["animal", "cat"],
         "pug": ["animal", "dog", "pug"]}


def test_a_teacher_of_other_classes_is_refused_naming_both_models():
    data = dataset(IDS, PATHS)
    names = {"teacher": "the teacher big/3 (timm vit, 5 classes)",
             "student": "the student (recipe 's', timm resnet10t)"}
    assert class_order(IDS, data, **names) is None
    assert class_order(["pug", "cat", "dog", "animal"], data, **names) == (3, 2, 1, 0)
    with pytest.raises(HypernymError) as err:
        class_order(["animal", "dog", "cat", "owl", "emu"], data, **names)
    message = str(err.value)
    for needle in ("big/3", "timm vit", "recipe 's'", "'pets' (4 classes)",
                   "1 of the student's classes are not the teacher's (pug)",
                   "2 of the teacher's classes are not the student's (owl, emu)"):
        assert needle in message, (needle, message)
    with pytest.raises(HypernymError, match="lists a class twice"):
        class_order(["animal", "dog", "cat", "pug", "pug"], data, **names)


def test_the_semantic_losses_need_the_same_hierarchy():
    data = dataset(IDS, PATHS)
    names = {"teacher": "the teacher big/3", "student": "the student"}
    check_hierarchy(PATHS, data, **names)
    # inner nodes that are not classes do not count: the semantic paths are the same
    check_hierarchy({c: ["root", *p] for c, p in PATHS.items()}, data, **names)
    moved = {**PATHS, "pug": ["animal", "cat", "pug"]}
    with pytest.raises(HypernymError) as err:
        check_hierarchy(moved, data, **names)
    assert "pug: animal > cat > pug for the teacher, animal > dog > pug for the student" in \
        str(err.value)
    with pytest.raises(HypernymError, match="big/3 cannot teach"):
        check_hierarchy({}, data, **names)
