"""The shipped WordNet hierarchy of the ImageNet-21K synsets."""

from __future__ import annotations

import pytest

from hypernym.errors import HypernymError
from hypernym.taxonomy.build import timm_21k_synsets
from hypernym.taxonomy.hierarchy import ROOT, Hierarchy, class_hierarchy, stats

DOG, ANIMAL, CHIHUAHUA, TABBY = "n02084071", "n00015388", "n02085620", "n02123045"


@pytest.fixture(scope="module")
def h():
    return Hierarchy.imagenet21k()


def test_every_timm_21k_synset_is_shipped_and_reaches_entity(h):
    ids = timm_21k_synsets()
    assert h.imagenet21k_ids == ids
    assert all(h.in_imagenet21k(i) for i in ids)
    assert {h.path(i)[0] for i in ids} == {ROOT}


def test_known_wordnet_facts(h):
    assert h.lemma(CHIHUAHUA) == "Chihuahua" and h.lemma(ROOT) == "entity"
    assert h.is_a(CHIHUAHUA, DOG) and h.is_a(CHIHUAHUA, ANIMAL)
    assert not h.is_a(TABBY, DOG) and h.is_a(TABBY, ANIMAL)
    assert h.path(CHIHUAHUA)[-2:] == ["n02085374", CHIHUAHUA]  # toy dog > Chihuahua
    assert CHIHUAHUA in h.children("n02085374")
    assert h.depth(ROOT) == 0 and h.depth(CHIHUAHUA) == len(h.path(CHIHUAHUA)) - 1


def test_unknown_id_is_explained(h):
    with pytest.raises(HypernymError, match="WordNet 3.0 noun offsets"):
        h.lemma("n99999999")


def test_class_hierarchy_wordnet_and_flat(h):
    tree = class_hierarchy([CHIHUAHUA, TABBY])
    assert tree["kind"] == "wordnet"
    assert tree["class_paths"][CHIHUAHUA][0] == ROOT
    assert tree["nodes"][CHIHUAHUA]["parent"] == "n02085374"
    assert tree["nodes"][ROOT]["parent"] is None
    assert tree["levels"][CHIHUAHUA] == h.depth(CHIHUAHUA)
    flat = class_hierarchy(["cat", "dog"])
    assert flat["kind"] == "flat" and flat["class_paths"]["dog"] == ["root", "dog"]


def test_stats(h):
    s = stats([CHIHUAHUA, TABBY])
    assert s["classes"] == 2 and s["max_depth"] == max(h.depth(CHIHUAHUA), h.depth(TABBY))
    assert sum(s["classes_per_depth"].values()) == 2


def test_user_given_tree():
    from hypernym.taxonomy.hierarchy import tree_hierarchy

    tree = tree_hierarchy(["tabby", "beagle"], {"tabby": "cat", "beagle": "dog", "cat": "pet",
                                                "dog": "pet", "pet": None})
    assert tree["kind"] == "custom" and tree["root"] == "pet"
    assert tree["class_paths"]["beagle"] == ["pet", "dog", "beagle"]
    assert tree["levels"] == {"tabby": 2, "beagle": 2}
    with pytest.raises(HypernymError, match="no parent for classes"):
        tree_hierarchy(["eel"], {"tabby": "cat"})
    with pytest.raises(HypernymError, match="cycle"):
        tree_hierarchy(["a"], {"a": "b", "b": "a"})
