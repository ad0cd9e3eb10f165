"""The demo's generated data: the winter21 layout, a real WordNet subtree, glyphs that follow the
tree, and scikit-learn's digits as a class-folder dataset."""

from __future__ import annotations

import io
import itertools
import tarfile

import numpy as np
import pytest
from PIL import Image

from hypernym.data.demo import (
    DEMO_CLASSES,
    DEMO_GROUPS,
    DEMO_SYNSETS,
    class_glyphs,
    make_digits_folder,
    make_winter21,
    render,
)
from hypernym.errors import HypernymError
from hypernym.taxonomy.build import timm_21k_synsets
from hypernym.taxonomy.hierarchy import Hierarchy, semantic_levels

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


def test_demo_classes_give_the_semantic_softmax_two_levels():
    levels = semantic_levels(DEMO_CLASSES)
    assert sorted(levels.values()) == [0] * 4 + [1] * 16  # the groups, then their leaves
    assert set(DEMO_CLASSES) <= set(timm_21k_synsets())


def test_glyphs_follow_the_tree():
    glyphs = class_glyphs(DEMO_CLASSES)

    def distance(a, b):  # over the strokes both have: those of the ancestors they share
        n = min(len(glyphs[a]), len(glyphs[b]))
        return float(np.abs(glyphs[a][:n] - glyphs[b][:n]).mean())

    groups = {g.rsplit(" ", 1)[1]: leaves for g, leaves in DEMO_GROUPS.items()}
    for group, leaves in groups.items():
        # a leaf is its group's strokes, bent, and one stroke of its own
        assert all(len(glyphs[leaf]) == len(glyphs[group]) + 1 for leaf in leaves)
        own = max(distance(group, leaf) for leaf in leaves)
        others = min(distance(group, leaf) for g, ls in groups.items() if g != group for leaf in ls)
        assert own < others, group  # a group's glyph is closest to its own leaves'
    dog, cat, finch, car = (leaves[0] for leaves in groups.values())
    # the animals share more of their path than an animal and a car: more strokes in common
    assert len(glyphs[dog]) == len(glyphs[cat]) > len(glyphs[finch]) > len(glyphs[car])
    assert distance(dog, cat) < distance(dog, car)
    for glyph in glyphs.values():
        assert glyph.shape[1:] == (4, 2) and np.abs(glyph).max() <= 1.0
    assert len({g.tobytes() for g in glyphs.values()}) == len(DEMO_CLASSES)
    flat = class_glyphs(["n99999991", "n99999992"])  # not synsets: still distinct glyphs
    assert not np.array_equal(flat["n99999991"], flat["n99999992"])


def test_render_draws_bright_strokes_on_a_dark_ground():
    glyph = class_glyphs(DEMO_SYNSETS)[DOGS[0]]
    rng = np.random.default_rng(0)
    for size in ((40, 40), (96, 64)):
        image = np.asarray(render(glyph, size, rng), dtype=float)
        assert image.shape == (size[1], size[0], 3)
        grey = image.mean(axis=2)
        assert np.abs(image - grey[..., None]).max() < 30  # grey, a faint tint at most
        ink = grey > 128
        assert 0.01 < ink.mean() < 0.6 and np.median(grey) < 60  # a shape, on a dark ground
    a, b = (np.asarray(render(glyph, (48, 48), np.random.default_rng(1))) for _ in range(2))
    assert np.array_equal(a, b)  # the generator decides the image
    # the same class drawn twice differs: pose, scale, the control points' jitter
    assert not np.array_equal(a, np.asarray(render(glyph, (48, 48), np.random.default_rng(2))))


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
