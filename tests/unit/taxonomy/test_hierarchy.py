"""The shipped WordNet hierarchy of the ImageNet synsets, and the hierarchies built from it."""

from __future__ import annotations

import pytest

from hypernym.errors import HypernymError
from hypernym.taxonomy import (
    ROOT,
    Hierarchy,
    class_hierarchy,
    semantic_levels,
    semantic_paths,
    stats,
    tree_hierarchy,
)
from hypernym.taxonomy.build import timm_21k_synsets, timm_info_dir, timm_synset_lists

DOG, ANIMAL, CARNIVORE = "n02084071", "n00015388", "n02075296"
TOY_DOG, CHIHUAHUA, MALTESE, TABBY = "n02085374", "n02085620", "n02085936", "n02123045"
CAR, TEDDY = "n02958343", "n04399382"


@pytest.fixture(scope="module")
def h():
    return Hierarchy.imagenet21k()


def test_shipped_file_holds_every_timm_list_and_reaches_entity(h):
    ids = timm_21k_synsets()
    assert h.imagenet21k_ids == ids  # the whole list, in timm's order
    assert all(h.in_imagenet21k(i) for i in ids)
    assert sum(h.in_imagenet21k(i) for i in set(h._synsets)) == len(set(ids))
    for name, listed in timm_synset_lists().items():
        assert all(i in h for i in listed), name
    assert {h.path(i)[0] for i in ids} == {ROOT}
    assert Hierarchy.imagenet21k() is h  # loaded once


def test_lemmas_match_timms_lemma_file(h):
    text = (timm_info_dir() / "imagenet_synset_to_lemma.txt").read_text()
    pairs = [line.split("\t", 1) for line in text.splitlines() if line.strip()]
    wrong = [(w, h.lemma(w), names) for w, names in pairs if h.lemma(w) != names.split(", ")[0]]
    assert len(pairs) > 21_000 and not wrong, wrong[:3]


def test_known_wordnet_facts(h):
    assert h.lemma(ROOT) == "entity" and h.parents(ROOT) == [] and h.depth(ROOT) == 0
    assert h.lemma(CHIHUAHUA) == "Chihuahua" and h.lemma(DOG) == "dog"
    assert h.is_a(CHIHUAHUA, DOG) and h.is_a(CHIHUAHUA, ANIMAL) and h.is_a(DOG, DOG)
    assert not h.is_a(TABBY, DOG) and h.is_a(TABBY, CARNIVORE) and not h.is_a(DOG, CHIHUAHUA)
    assert h.path(CHIHUAHUA)[-3:] == [DOG, TOY_DOG, CHIHUAHUA]
    assert h.depth(CHIHUAHUA) == len(h.path(CHIHUAHUA)) - 1 > h.depth(DOG)
    assert CHIHUAHUA in h.children(TOY_DOG) and TOY_DOG not in h.children(CARNIVORE)
    below_dog = h.descendants(DOG)
    assert {TOY_DOG, CHIHUAHUA, MALTESE} <= set(below_dog) and TABBY not in below_dog
    assert all(h.is_a(d, DOG) for d in below_dog)
    assert h.common_ancestor([CHIHUAHUA, TABBY]) == CARNIVORE
    assert h.common_ancestor([CHIHUAHUA, MALTESE]) == TOY_DOG
    assert h.in_imagenet21k(CHIHUAHUA) and not h.in_imagenet21k(TEDDY)  # 1K-only class


def test_multiple_inheritance_keeps_every_parent(h):
    several = [w for w in h._synsets if len(h.parents(w)) > 1]
    assert several
    for wnid in several[:50]:
        first, *others = h.parents(wnid)
        assert h.path(wnid)[-2] == first  # the canonical path takes the first hypernym
        assert all(h.is_a(wnid, o) and wnid in h.children(o) for o in others)


def test_unknown_ids_are_explained(h):
    with pytest.raises(HypernymError, match="not a WordNet 3.0 noun synset"):
        h.lemma("n99999999")
    with pytest.raises(HypernymError, match="'n' and an 8-digit WordNet 3.0 noun offset"):
        h.path("dog")
    with pytest.raises(HypernymError, match="n99999999"):
        h.is_a(CHIHUAHUA, "n99999999")
    assert "n99999999" not in h


def test_class_hierarchy_wordnet(h):
    tree = class_hierarchy([CHIHUAHUA, TABBY])
    assert tree["kind"] == "wordnet" and tree["root"] == ROOT
    assert tree["class_paths"][CHIHUAHUA] == h.path(CHIHUAHUA)
    assert tree["nodes"][CHIHUAHUA] == {"parent": TOY_DOG, "lemma": "Chihuahua"}
    assert tree["nodes"][ROOT] == {"parent": None, "lemma": "entity"}
    expected_nodes = set(h.path(CHIHUAHUA)) | set(h.path(TABBY))
    assert set(tree["nodes"]) == expected_nodes
    assert tree["levels"] == {CHIHUAHUA: h.depth(CHIHUAHUA), TABBY: h.depth(TABBY)}


def test_class_hierarchy_flat_when_any_class_is_not_a_synset():
    flat = class_hierarchy(["cat", "dog"])
    assert flat["kind"] == "flat" and flat["class_paths"]["dog"] == ["root", "dog"]
    assert flat["nodes"]["dog"] == {"parent": "root", "lemma": "dog"}
    assert class_hierarchy([CHIHUAHUA, "n99999999"])["kind"] == "flat"


def test_semantic_levels_prune_the_tree_to_the_classes(h):
    classes = [DOG, TOY_DOG, CHIHUAHUA, TABBY, ANIMAL]
    paths = semantic_paths(class_hierarchy(classes)["class_paths"])
    assert paths[CHIHUAHUA] == [ANIMAL, DOG, TOY_DOG, CHIHUAHUA]
    assert paths[TABBY] == [ANIMAL, TABBY] and paths[ANIMAL] == [ANIMAL]
    assert semantic_levels(classes) == {DOG: 1, TOY_DOG: 2, CHIHUAHUA: 3, TABBY: 1, ANIMAL: 0}
    assert set(semantic_levels(["cat", "dog"]).values()) == {0}  # flat


def test_semantic_levels_of_21k_p_match_the_paper():
    """The 21K-P code keeps the levels holding more than one class, less the deepest: 11."""
    classes = (timm_info_dir() / "imagenet21k_miil_w21_synsets.txt").read_text().split()
    per_level = stats(classes)["classes_per_semantic_level"]
    deepest = max(per_level)
    assert len([lv for lv in range(deepest) if per_level.get(lv, 0) > 1]) == 11


def test_stats(h):
    s = stats([CHIHUAHUA, TABBY, DOG])
    depths = [h.depth(CHIHUAHUA), h.depth(TABBY), h.depth(DOG)]
    assert s["classes"] == 3 and s["max_depth"] == max(depths)
    assert s["mean_depth"] == pytest.approx(sum(depths) / 3)
    assert sum(s["classes_per_depth"].values()) == 3
    assert s["classes_per_semantic_level"] == {0: 2, 1: 1}  # Chihuahua is below dog


def test_user_given_tree():
    tree = tree_hierarchy(["tabby", "beagle"], {"tabby": "cat", "beagle": "dog", "cat": "pet",
                                                "dog": "pet", "pet": None})
    assert tree["kind"] == "custom" and tree["root"] == "pet"
    assert tree["class_paths"]["beagle"] == ["pet", "dog", "beagle"]
    assert tree["levels"] == {"tabby": 2, "beagle": 2}
    with pytest.raises(HypernymError, match="no parent for classes"):
        tree_hierarchy(["eel"], {"tabby": "cat"})
    with pytest.raises(HypernymError, match="cycle"):
        tree_hierarchy(["a"], {"a": "b", "b": "a"})
