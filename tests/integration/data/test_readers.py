"""Prepared shards are readable by the loaders users already have: plain webdataset (tested in
test_prepare), timm's WebDataset reader, and Ray Data's read_webdataset; and so are annotated
ones: the glyph scenes (COCO layout, multi-label with boxes) and a VOC miniature prepared as Ray
tasks, read back with plain webdataset and Ray Data, and inspected with `hypernym data inspect`,
whose contact sheet draws the boxes. (Every annotated layout in every resize mode is in
tests/unit/data/test_annotated_prepare.py, with the shard tasks in process.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds

from hypernym.config import parse_recipe
from hypernym.data.demo import DEMO_SYNSETS
from hypernym.data.prepare import prepare
from hypernym.data.scenes import make_glyph_scenes
from tests.annotated import check_samples, make_voc

from .conftest import make_winter21

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("readers")
    src = make_winter21(root / "raw", per_class=8)
    manifest = prepare(parse_recipe({
        "kind": "prepare", "source": str(src), "output": str(root / "out"), "val_per_class": 2,
        "min_per_class": 0,
        "image_size": 32, "shard_samples": 10,
    }), show_progress=False)
    return root / "out", manifest


def test_timm_wds_reader(dataset):
    import timm.data

    out, manifest = dataset
    for split in ("train", "val"):
        ds = timm.data.create_dataset("wds/mini", root=str(out), split=split, is_training=False)
        samples = list(ds)
        assert len(samples) == manifest.num_samples(split)
        image, target = samples[0]
        assert image.size == (32, 32) and 0 <= int(target) < len(manifest.classes)
    labels = sorted(int(t) for _, t in timm.data.create_dataset(
        "wds/mini", root=str(out), split="val", is_training=False))
    assert labels == sorted(list(range(len(manifest.classes))) * 2)


def test_ray_data_read_webdataset(dataset):
    import ray.data

    out, manifest = dataset
    ds = ray.data.read_webdataset(manifest.shard_urls(str(out), "train"), decoder=None)
    rows = ds.take_all()
    assert len(rows) == manifest.num_samples("train")
    assert {"jpg", "cls"} <= set(rows[0])


def test_inspect_prints_summary_and_writes_contact_sheet(dataset, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from hypernym.cli import app

    out, manifest = dataset
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["data", "inspect", str(out), "--sheet", str(sheet),
                                      "--classes", "3"])
    assert result.exit_code == 0, result.output
    assert f"{len(manifest.classes)} classes" in result.output and "wordnet" in result.output
    assert str(manifest.num_samples("train")) in result.output
    image = Image.open(sheet)
    assert image.size == (160 + 6 * 96, 3 * 96)
    assert len(set(image.convert("L").getdata())) > 50  # real thumbnails, not a blank page


def recipe(source, output, **settings):
    return parse_recipe({"kind": "prepare", "source": str(source), "output": str(output),
                         "min_per_class": 0, "image_size": 64, "shard_samples": 16, **settings})


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("scenes")
    source = make_glyph_scenes(root / "raw", images={"train": 40, "val": 12}, canvas=(96, 96))
    manifest = prepare(recipe(source, root / "ds", resize="shorter"), show_progress=False)
    return source, root / "ds", manifest


def test_glyph_scenes_prepare_to_multi_label_shards(scenes):
    source, out, manifest = scenes
    assert [c.id for c in manifest.classes] == DEMO_SYNSETS
    assert manifest.hierarchy["kind"] == "wordnet"  # the classes are the demo's synsets
    assert manifest.num_samples("train") == 40 and manifest.num_samples("val") == 12
    stats = manifest.stats["annotations"]
    assert stats["multi_label"] is True
    samples = list(wds.WebDataset(manifest.shard_urls(str(out), "train"), shardshuffle=False))
    assert len(samples) == 40 and not any("cls" in s for s in samples)
    coco = json.loads((source / "annotations" / "instances_train.json").read_text())
    boxes = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append((x, y, x + w, y + h))
    for sample in samples:
        meta = json.loads(sample["json"])
        image_id = int(sample["__key__"].rsplit("_", 1)[1])
        want = sorted(np.array(boxes[image_id]) * 64 / 96, key=lambda b: tuple(b))
        got = sorted((b["box"] for b in meta["boxes"]), key=tuple)
        assert np.allclose(got, want, atol=0.01)  # 96 -> 64: every coordinate times 2/3
        assert meta["labels"] == sorted({b["class"] for b in meta["boxes"]})
    split = stats["splits"]["train"]
    assert split["boxes"] == sum(len(v) for k, v in boxes.items())
    assert split["label_cardinality"]["mean"] > 1.5


def test_ray_data_reads_the_annotations(scenes):
    import ray.data

    _, out, manifest = scenes
    rows = ray.data.read_webdataset(manifest.shard_urls(str(out), "val"), decoder=None).take_all()
    assert len(rows) == 12 and all(json.loads(r["json"])["labels"] for r in rows)


def test_inspect_draws_boxes_and_labels(scenes, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from hypernym.cli import app

    _, out, manifest = scenes
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["data", "inspect", str(out), "--sheet", str(sheet),
                                      "--classes", "4"])
    assert result.exit_code == 0, result.output
    assert "annotations: multi-label" in result.output
    assert "train: 40 of 40 images with boxes" in result.output
    pixels = np.asarray(Image.open(sheet).convert("RGB"), np.int32)
    # the boxes of classes 0-3 in their palette colours (the glyphs themselves are grey)
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28)):
        assert (np.abs(pixels - colour).max(axis=-1) < 8).sum() > 20, colour


def test_voc_on_ray_tasks(tmp_path, ray_local):
    expected = make_voc(tmp_path / "voc")
    manifest = prepare(recipe(tmp_path / "voc", tmp_path / "ds", image_size=48, shard_samples=3),
                       show_progress=False)
    samples = [s for split in manifest.splits for s in wds.WebDataset(
        manifest.shard_urls(str(tmp_path / "ds"), split), shardshuffle=False)]
    assert len(samples) == len(expected) == 8
    assert check_samples(samples, expected, [c.id for c in manifest.classes]) == 15
    assert manifest.dropped["annotation_unreadable"] == 1
