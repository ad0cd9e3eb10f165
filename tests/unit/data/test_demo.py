"""The demo's generated data: the winter21 layout, a real WordNet subtree, related classes that
look related, and scikit-learn's digits as a class-folder dataset."""

from __future__ import annotations

import io
import itertools
import tarfile

import numpy as np
import pytest
from PIL import Image

from hypernym.data.demo import (
    DEMO_GROUPS,
    DEMO_SYNSETS,
    class_styles,
    make_digits_folder,
    make_winter21,
)
from hypernym.errors import HypernymError
from hypernym.taxonomy.build import timm_21k_synsets
from hypernym.taxonomy.hierarchy import Hierarchy

DOGS, CATS, FINCHES, CARS = DEMO_GROUPS.values()


def members(tar_path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_winter21_layout(tmp_path):
    classes = make_winter21(tmp_path, images_per_class=3, image_size=(80, 70),
                            classes=[CARS[0], DOGS[0]])
    assert classes == [CARS[0], DOGS[0]]  # in the order given
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{c}.tar" for c in classes)
    for synset in classes:
        entries = members(tmp_path / f"{synset}.tar")
        assert [m.name for m, _ in entries] == [f"{synset}_{i}.JPEG" for i in (1, 2, 3)]
        assert all(m.isfile() for m, _ in entries)  # plain members at the top level, no folders
        for _, data in entries:
            image = Image.open(io.BytesIO(data))
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (80, 70)


def test_same_seed_same_bytes_and_reruns_keep_finished_tars(tmp_path):
    kw = {"images_per_class": 2, "image_size": (64, 48)}
    make_winter21(tmp_path / "a", classes=[DOGS[0], CATS[0]], **kw)
    make_winter21(tmp_path / "b", classes=[CATS[0], DOGS[0]], **kw)  # order does not matter
    name = f"{DOGS[0]}.tar"
    first = (tmp_path / "a" / name).read_bytes()
    assert (tmp_path / "b" / name).read_bytes() == first

    before = (tmp_path / "a" / name).stat()
    make_winter21(tmp_path / "a", classes=[DOGS[0], CATS[0]], **kw)
    after = (tmp_path / "a" / name).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # kept

    make_winter21(tmp_path / "a", classes=[DOGS[0], CATS[0]], seed=1, **kw)
    assert (tmp_path / "a" / name).read_bytes() != first  # another seed: rewritten
    assert not list((tmp_path / "a").glob(".*"))  # no temporary files left


def test_default_classes_are_a_real_wordnet_subtree():
    h = Hierarchy.imagenet21k()
    assert len(DEMO_SYNSETS) == len(set(DEMO_SYNSETS)) == 16
    assert set(DEMO_SYNSETS) <= set(timm_21k_synsets())
    for group, leaves in DEMO_GROUPS.items():
        lemma, wnid = group.rsplit(" ", 1)
        assert h.lemma(wnid) == lemma and all(h.parents(leaf)[0] == wnid for leaf in leaves)
    top = h.common_ancestor(DEMO_SYNSETS)
    assert max(h.depth(s) for s in DEMO_SYNSETS) - h.depth(top) >= 3
    # where pairs of classes meet: at several different levels (toy dog, carnivore, ...)
    meets = {h.depth(h.common_ancestor([a, b])) for a, b in itertools.combinations(DEMO_SYNSETS, 2)}
    assert len(meets) >= 3
    carnivore, animal = "n02075296", "n00015388"
    assert all(h.is_a(s, carnivore) for s in DOGS + CATS)
    assert all(h.is_a(s, animal) and not h.is_a(s, carnivore) for s in FINCHES)
    assert not any(h.is_a(s, animal) for s in CARS)


def test_styles_follow_the_tree():
    styles = class_styles(DEMO_SYNSETS)

    def hue_gap(a, b):
        gap = abs(styles[a].hue - styles[b].hue) % 1.0
        return min(gap, 1.0 - gap)

    animals = DOGS + CATS + FINCHES
    assert len({styles[s].family for s in animals}) == 1
    assert styles[CARS[0]].family != styles[DOGS[0]].family  # another branch: another shape
    for group in DEMO_GROUPS.values():
        assert len({(styles[s].family, styles[s].variant) for s in group}) == 1
        angles = [styles[s].angle for s in group]
        assert len(set(angles)) == 4 and all(0 <= a <= 90 for a in angles)  # flip-safe
        assert max(hue_gap(a, b) for a, b in itertools.combinations(group, 2)) < 0.05
    assert hue_gap(DOGS[0], CATS[0]) < hue_gap(DOGS[0], FINCHES[0]) < hue_gap(DOGS[0], CARS[0])
    # classes that are not synsets still get distinct looks
    flat = class_styles(["n99999991", "n99999992"])
    assert flat["n99999991"] != flat["n99999992"]


def test_related_classes_look_alike(tmp_path):
    make_winter21(tmp_path, images_per_class=6, image_size=(96, 96))

    def mean_colour(synset):
        """Mean RGB of the saturated (object) pixels of a class's images."""
        pixels = []
        for _, data in members(tmp_path / f"{synset}.tar"):
            image = Image.open(io.BytesIO(data))
            hsv = np.asarray(image.convert("HSV")).reshape(-1, 3)
            pixels.append(np.asarray(image, float).reshape(-1, 3)[hsv[:, 1] > 150])
        return np.concatenate(pixels).mean(axis=0)

    colour = {s: mean_colour(s) for s in DEMO_SYNSETS}

    def distance(a, b):
        return float(np.linalg.norm(colour[a] - colour[b]))

    same_group = max(distance(a, b) for a, b in itertools.combinations(DOGS, 2))
    assert same_group < distance(DOGS[0], CATS[0]) < distance(DOGS[0], CARS[0])
    assert distance(CATS[0], CATS[1]) < distance(CATS[0], FINCHES[0])


def test_digits_folder(tmp_path):
    from sklearn.datasets import load_digits

    names = make_digits_folder(tmp_path / "a", size=16)
    assert names == [str(d) for d in range(10)]
    files = sorted((tmp_path / "a").glob("*/*.png"))
    assert len(files) == 1797
    counts = [len(list((tmp_path / "a" / n).glob("digit_*.png"))) for n in names]
    assert counts == np.bincount(load_digits().target).tolist()
    image = Image.open(tmp_path / "a" / "0" / "digit_0.png")  # sample 0 is a zero
    assert image.size == (16, 16) and image.mode == "L"
    assert np.asarray(image).max() > 200 and np.asarray(image).min() == 0

    make_digits_folder(tmp_path / "b", size=16)
    assert all(f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
               for f in files[::50])  # deterministic
    make_digits_folder(tmp_path / "b", size=24)  # another size rewrites the folder
    assert Image.open(tmp_path / "b" / "0" / "digit_0.png").size == (24, 24)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"classes": ["dog"]}, "WordNet ids like"),
    ({"classes": []}, "WordNet ids like"),
    ({"classes": ["n02085620", "n02085620"]}, "listed twice"),
    ({"images_per_class": 0}, "at least 1"),
    ({"image_size": (8, 300)}, "each at least 16"),
    ({"quality": 0}, "from 1 to 100"),
])
def test_bad_arguments_are_explained(tmp_path, kwargs, match):
    with pytest.raises(HypernymError, match=match):
        make_winter21(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())  # nothing written before the check
