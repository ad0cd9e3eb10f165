"""Generated glyph scenes: several of the demo's glyphs per canvas, their boxes, the COCO layout
prepare reads, determinism and the parameters' checks."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from hypernym.data.demo import DEMO_SYNSETS
from hypernym.data.scenes import make_glyph_scenes
from hypernym.data.sources import detect_format, list_source
from hypernym.errors import HypernymError


def load(root, split):
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_scenes_have_their_boxes_around_the_strokes(tmp_path):
    root = make_glyph_scenes(tmp_path / "s", images={"train": 16, "val": 4}, canvas=(96, 80),
                             objects=(2, 3), object_size=(0.3, 0.5))
    train = load(root, "train")
    assert [c["name"] for c in train["categories"]] == DEMO_SYNSETS
    assert len(train["images"]) == 16 and len(load(root, "val")["images"]) == 4
    per_image = {i: [] for i in range(16)}
    for ann in train["annotations"]:
        per_image[ann["image_id"]].append(ann)
    assert all(1 <= len(v) <= 3 for v in per_image.values())  # a glyph may find no room
    assert sum(len(v) for v in per_image.values()) >= 16 * 2 - 2
    assert len({ann["category_id"] for ann in train["annotations"]}) >= 8
    for entry in train["images"]:
        pixels = np.asarray(Image.open(root / "train" / entry["file_name"]).convert("L"))
        assert pixels.shape == (80, 96)
        inside = np.zeros_like(pixels, dtype=bool)
        for ann in per_image[entry["id"]]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 80 and w > 2 and h > 2
            assert pixels[y : y + h, x : x + w].max() >= 150  # strokes in every box
            inside[max(y - 1, 0) : y + h + 1, max(x - 1, 0) : x + w + 1] = True
        assert not (pixels[~inside] >= 160).any()  # and none outside them


def test_same_seed_same_bytes_and_a_rerun_keeps_them(tmp_path):
    kw = {"images": {"train": 5}, "canvas": (64, 64)}
    a = make_glyph_scenes(tmp_path / "a", **kw)
    b = make_glyph_scenes(tmp_path / "b", **kw)
    assert (a / "train" / "train_000004.jpg").read_bytes() == \
        (b / "train" / "train_000004.jpg").read_bytes()
    assert load(a, "train") == load(b, "train")
    other = make_glyph_scenes(tmp_path / "c", seed=1, **kw)
    assert load(other, "train")["annotations"] != load(a, "train")["annotations"]
    before = (a / "annotations" / "instances_train.json").stat().st_mtime_ns
    make_glyph_scenes(tmp_path / "a", **kw)
    assert (a / "annotations" / "instances_train.json").stat().st_mtime_ns == before
    make_glyph_scenes(tmp_path / "a", **{**kw, "objects": (1, 1)})  # other parameters: redone
    assert all(len([x for x in load(a, "train")["annotations"] if x["image_id"] == i]) == 1
               for i in range(5))


def test_prepare_reads_it_as_coco_and_it_is_fast(tmp_path):
    start = time.perf_counter()
    root = make_glyph_scenes(tmp_path / "s")  # the defaults: 200 + 50 scenes of 160 x 160
    seconds = time.perf_counter() - start
    assert seconds < 20, seconds
    assert detect_format(str(root)) == "coco"
    listing = list_source(str(root))
    assert listing.classes == DEMO_SYNSETS and not listing.annotation_skipped
    assert sum(len(v) for v in listing.items.values()) == 200
    assert sum(len(v) for v in listing.val.values()) == 50
    image = Image.open(io.BytesIO((root / "val" / "val_000000.jpg").read_bytes()))
    assert image.size == (160, 160) and image.mode == "RGB"


def test_glyph_tree_draws_the_leaves_as_the_demo_does(tmp_path):
    """The demo pretrains on its 20 classes (the leaves and their groups), and a glyph's strokes
    depend on the whole tree: with glyph_tree=DEMO_CLASSES the scenes draw the demo's leaves."""
    from hypernym.data.demo import DEMO_CLASSES, class_glyphs, named_rng
    from hypernym.data.scenes import render_scene

    kw = {"images": {"train": 3}, "canvas": (64, 64)}
    demo = make_glyph_scenes(tmp_path / "demo", glyph_tree=DEMO_CLASSES, **kw)
    own = make_glyph_scenes(tmp_path / "own", **kw)
    leaves = class_glyphs(list(DEMO_CLASSES))
    rng = named_rng(0, "scenes/train")
    for i in range(3):
        image, _ = render_scene({c: leaves[c] for c in DEMO_SYNSETS}, (64, 64), rng)
        written = np.asarray(Image.open(demo / "train" / f"train_{i:06d}.jpg"), np.float32)
        assert np.abs(written - np.asarray(image, np.float32)).mean() < 3  # JPEG's loss
    assert (demo / "train" / "train_000000.jpg").read_bytes() != \
        (own / "train" / "train_000000.jpg").read_bytes()
    assert load(demo, "train")["info"]["glyph_tree"] == list(DEMO_CLASSES)


@pytest.mark.parametrize(("kw", "message"), [
    ({"images": {"train": 0}}, "each at least 1"),
    ({"canvas": (8, 64)}, "canvas is"),
    ({"objects": (3, 2)}, "objects is"),
    ({"object_size": (0.5, 1.5)}, "object_size is"),
    ({"max_overlap": 2.0}, "max_overlap is"),
    ({"classes": ["n02085620", "n02085620"]}, "distinct class ids"),
    ({"glyph_tree": ["n02085620"]}, "glyph_tree lacks the classes"),
])
def test_bad_parameters(tmp_path, kw, message):
    with pytest.raises(HypernymError, match=message):
        make_glyph_scenes(tmp_path, **kw)
