"""The demo's generated data: the winter21 layout, a real WordNet subtree, learnable images."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from hypernym.data.demo import DEMO_GROUPS, DEMO_SYNSETS, make_digits_folder, make_winter21
from hypernym.errors import HypernymError
from hypernym.taxonomy.build import timm_21k_synsets
from hypernym.taxonomy.hierarchy import Hierarchy


def test_winter21_layout(tmp_path):
    classes = make_winter21(tmp_path, images_per_class=3, image_size=(80, 70),
                            classes=DEMO_SYNSETS[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{c}.tar" for c in sorted(classes)]
    with tarfile.open(tmp_path / f"{classes[0]}.tar") as tar:
        names = tar.getnames()
        assert names == [f"{classes[0]}_{i}.JPEG" for i in (1, 2, 3)]
        image = Image.open(io.BytesIO(tar.extractfile(names[0]).read()))
        assert image.format == "JPEG" and image.size == (80, 70)


def test_deterministic(tmp_path):
    kw = {"images_per_class": 2, "image_size": (64, 64), "classes": DEMO_SYNSETS[:1]}
    (synset,) = make_winter21(tmp_path / "a", **kw)
    make_winter21(tmp_path / "b", **kw)
    name = f"{synset}.tar"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_classes_are_a_real_wordnet_subtree():
    h = Hierarchy.imagenet21k()
    assert set(DEMO_SYNSETS) <= set(timm_21k_synsets())
    for group, leaves in DEMO_GROUPS.items():
        parent = group.split()[-1]
        assert all(h.is_a(leaf, parent) for leaf in leaves), group
    # dogs and cats meet at carnivore, finches join at animal, cars at entity: several levels
    carnivore, animal = "n02075296", "n00015388"
    assert h.is_a(DEMO_SYNSETS[0], carnivore) and h.is_a(DEMO_SYNSETS[4], carnivore)
    assert h.is_a(DEMO_SYNSETS[8], animal) and not h.is_a(DEMO_SYNSETS[8], carnivore)
    assert not h.is_a(DEMO_SYNSETS[12], animal)


def test_related_classes_look_alike(tmp_path):
    make_winter21(tmp_path, images_per_class=6, image_size=(96, 96))

    def mean_colour(synset):
        with tarfile.open(tmp_path / f"{synset}.tar") as tar:
            images = [np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())), float)
                      for m in tar.getmembers()]
        # the foreground is the saturated part; its mean hue is the class's colour family
        return np.mean([img.reshape(-1, 3)[img.std(axis=2).ravel() > 40].mean(0)
                        for img in images], axis=0)

    chihuahua, maltese, tabby, car = (mean_colour(DEMO_SYNSETS[i]) for i in (0, 2, 4, 12))
    assert np.linalg.norm(chihuahua - maltese) < np.linalg.norm(chihuahua - car)
    assert np.linalg.norm(chihuahua - tabby) < np.linalg.norm(chihuahua - car)


def test_digits_folder(tmp_path):
    names = make_digits_folder(tmp_path, size=16)
    assert names == [str(d) for d in range(10)]
    files = list(tmp_path.glob("*/*.png"))
    assert len(files) == 1797
    assert Image.open(files[0]).size == (16, 16)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"classes": ["dog"]}, "WordNet ids like"),
    ({"classes": []}, "WordNet ids like"),
    ({"classes": ["n02085620", "n02085620"]}, "listed twice"),
    ({"images_per_class": 0}, "at least 1"),
])
def test_bad_arguments_are_explained(tmp_path, kwargs, match):
    with pytest.raises(HypernymError, match=match):
        make_winter21(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())  # nothing written before the check
