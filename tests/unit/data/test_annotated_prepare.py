"""Annotated sources through `prepare`, on miniatures of each layout made on the spot: PASCAL
VOC, COCO, the ILSVRC-2012 box archives, the full release's Annotation archives, and
multi-label CSV/JSONL. Each is prepared in every resize mode, read back with plain webdataset,
and its boxes compared with the originals (tests/annotated.py draws every box as a rectangle, so
the stored image says where the box must be). Planted corrupt annotations are counted.

The shard tasks run in this process here; tests/integration/data/test_readers.py runs them
as Ray tasks, and from S3.
"""

from __future__ import annotations

import json

import pytest
import webdataset as wds

import hypernym.data.prepare as prepare_module
from hypernym.config import parse_recipe
from hypernym.data.prepare import prepare
from hypernym.data.shards import write_shard
from hypernym.data.sources import detect_format
from hypernym.errors import HypernymError
from tests.annotated import (
    CLASSES,
    SYNSETS,
    check_samples,
    make_coco,
    make_full_release,
    make_ilsvrc,
    make_tables,
    make_voc,
)

MODES = ["squish", "shorter", "none"]


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(prepare_module, "_run_tasks", lambda tasks, show_progress: {
        name: write_shard(**kwargs) for name, kwargs in tasks.items()})


def prepared(source, output, **settings):
    """(manifest, {split: samples read back with plain webdataset})."""
    recipe = parse_recipe({"kind": "prepare", "source": str(source), "output": str(output),
                           "min_per_class": 0, "val_per_class": 1, "image_size": 48,
                           "shard_samples": 4, **settings})
    manifest = prepare(recipe, show_progress=False)
    return manifest, {split: list(wds.WebDataset(manifest.shard_urls(str(output), split),
                                                 shardshuffle=False))
                      for split in manifest.splits}


def check_stats(manifest, samples) -> None:
    """The manifest's annotation counts are those of the samples."""
    stats = manifest.stats["annotations"]
    metas = [json.loads(s["json"]) for part in samples.values() for s in part]
    multi = any(len(m["labels"]) != 1 for m in metas)
    assert stats["multi_label"] is multi
    assert all(("cls" in s) is not multi for part in samples.values() for s in part)
    for split, part in samples.items():
        mine = [json.loads(s["json"]) for s in part]
        summary = stats["splits"][split]
        assert summary["images"] == len(mine)
        assert summary["images_with_boxes"] == sum(bool(m["boxes"]) for m in mine)
        assert summary["boxes"] == sum(len(m["boxes"]) for m in mine)
        assert summary["label_cardinality"]["max"] == max(len(m["labels"]) for m in mine)


@pytest.mark.parametrize("resize", MODES)
def test_voc(tmp_path, in_process, resize):
    expected = make_voc(tmp_path / "voc")
    assert detect_format(str(tmp_path / "voc")) == "voc"
    manifest, samples = prepared(tmp_path / "voc", tmp_path / "out", resize=resize)
    classes = [c.id for c in manifest.classes]
    assert classes == sorted({c for _, boxes in expected.values() for c, _ in boxes})
    assert {s["__key__"] for s in samples["val"]} == {"2007_000006", "2007_000007", "2007_000008"}
    assert {s["__key__"] for part in samples.values() for s in part} == set(expected)
    assert check_samples([s for part in samples.values() for s in part], expected, classes) == 15
    # box outside the image, x1 < x0, an unreadable XML, a listed image without one
    assert {k: v for k, v in manifest.dropped.items() if k.startswith("annotation_")} == {
        "annotation_box_outside_image": 1, "annotation_box_inverted": 1,
        "annotation_unreadable": 1, "annotation_missing": 1}
    [first] = [json.loads(s["json"]) for s in samples["train"] if s["__key__"] == "2007_000001"]
    assert min(first["boxes"], key=lambda b: b["box"][0])["flags"] == ["difficult"]
    check_stats(manifest, samples)


@pytest.mark.parametrize("resize", MODES)
def test_coco(tmp_path, in_process, resize):
    expected = make_coco(tmp_path / "coco")
    assert detect_format(str(tmp_path / "coco")) == "coco"
    manifest, samples = prepared(tmp_path / "coco", tmp_path / "out", resize=resize)
    assert [c.id for c in manifest.classes] == CLASSES  # the categories, in id order
    assert len(samples["train"]) == 6 and len(samples["val"]) == 3  # the files' own splits
    assert check_samples([s for part in samples.values() for s in part], expected,
                         CLASSES) == sum(len(b) for _, b in expected.values()) == 12
    assert {k: v for k, v in manifest.dropped.items() if k.startswith("annotation_")} == {
        "annotation_image_id_unknown": 2, "annotation_box_inverted": 2}
    metas = {s["__key__"]: json.loads(s["json"]) for part in samples.values() for s in part}
    assert metas["000000000001"]["labels"] == [] and metas["000000000001"]["boxes"] == []
    crowd = min(metas["000000000000"]["boxes"], key=lambda b: b["box"][0])
    assert crowd["flags"] == ["crowd"]
    assert manifest.stats["annotations"]["multi_label"] is True
    check_stats(manifest, samples)


@pytest.mark.parametrize("resize", MODES)
def test_ilsvrc_box_archives(tmp_path, in_process, resize):
    source, archives, expected = make_ilsvrc(tmp_path)
    manifest, samples = prepared(source, tmp_path / "out", resize=resize,
                                 boxes=[str(a) for a in archives])
    assert [c.id for c in manifest.classes] == SYNSETS
    assert len(samples["val"]) == 4 and len(samples["train"]) == 8
    assert check_samples([s for part in samples.values() for s in part], expected,
                         SYNSETS) == sum(len(b) for _, b in expected.values())
    for sample in (s for part in samples.values() for s in part):  # single-label, as before
        meta = json.loads(sample["json"])
        assert meta["labels"] == [int(sample["cls"])]
        assert meta["class_id"] == SYNSETS[int(sample["cls"])]
    assert sum(not json.loads(s["json"])["boxes"] for s in samples["train"]) == 4  # no boxes
    stats = manifest.stats["annotations"]
    assert stats["box_files"] == 8 and stats["multi_label"] is False
    check_stats(manifest, samples)


@pytest.mark.parametrize("resize", MODES)
def test_full_release_annotation_archives(tmp_path, in_process, resize):
    images, notes, expected = make_full_release(tmp_path)
    assert detect_format(str(images)) == "winter21"
    manifest, samples = prepared(images, tmp_path / "out", resize=resize, boxes=str(notes))
    every = [s for part in samples.values() for s in part]
    assert {s["__key__"] for s in every} == set(expected)  # images without boxes stay
    assert check_samples(every, expected, SYNSETS) == sum(len(b) for _, b in expected.values())
    # an unreadable XML and a damaged archive; a box outside its image in each synset
    assert {k: v for k, v in manifest.dropped.items() if k.startswith("annotation_")} == {
        "annotation_unreadable": 2, "annotation_box_outside_image": 2}
    assert manifest.stats["annotations"]["box_files_without_image"] == 2
    check_stats(manifest, samples)


@pytest.mark.parametrize("resize", MODES)
def test_multi_label_tables(tmp_path, in_process, resize):
    csv, jsonl, expected, labels = make_tables(tmp_path / "tables")
    manifest, samples = prepared(csv, tmp_path / "out-csv", resize=resize, label_separator="|")
    classes = [c.id for c in manifest.classes]
    assert {s["__key__"] for s in samples["val"]} == {"im7", "im8"}  # the split column
    for sample in (s for part in samples.values() for s in part):
        meta = json.loads(sample["json"])
        assert [classes[c] for c in meta["labels"]] == labels[sample["__key__"]]
        assert meta["boxes"] == []
    check_stats(manifest, samples)

    manifest, samples = prepared(jsonl, tmp_path / "out-jsonl", resize=resize)
    every = [s for part in samples.values() for s in part]
    classes = [c.id for c in manifest.classes]
    assert check_samples(every, expected, classes) == 17
    for sample in every:
        meta = json.loads(sample["json"])
        assert [classes[c] for c in meta["labels"]] == labels[sample["__key__"]]
    assert manifest.dropped["annotation_box_inverted"] == 1
    check_stats(manifest, samples)


def test_recipe_keys_are_checked(tmp_path, in_process):
    base = {"kind": "prepare", "source": "s", "output": "o"}
    with pytest.raises(ValueError, match="boxes joins ImageNet's boxes"):
        parse_recipe({**base, "source_format": "voc", "boxes": ["x.tar.gz"]})
    with pytest.raises(ValueError, match="label_separator is for csv and jsonl"):
        parse_recipe({**base, "source_format": "winter21", "label_separator": "|"})
    with pytest.raises(ValueError, match="label_separator is empty"):
        parse_recipe({**base, "label_separator": ""})
    assert parse_recipe({**base, "boxes": "one.tar.gz"}).boxes == ["one.tar.gz"]

    make_voc(tmp_path / "voc")
    with pytest.raises(HypernymError, match="exclude_subtrees"):
        prepared(tmp_path / "voc", tmp_path / "o1", exclude_subtrees=["n00007846"])
    with pytest.raises(HypernymError, match="boxes: are joined to single-label sources"):
        prepared(tmp_path / "voc", tmp_path / "o2", boxes=str(tmp_path))
    csv, *_ = make_tables(tmp_path / "tables")
    with pytest.raises(HypernymError, match="needs the recipe's label_separator"):
        prepared(csv, tmp_path / "o3")
    images, _, _ = make_full_release(tmp_path / "release")
    with pytest.raises(HypernymError, match="boxes: .*nope does not exist"):
        prepared(images, tmp_path / "o4", boxes=str(tmp_path / "nope"))
    (tmp_path / "voc" / "ImageSets" / "Main" / "train.txt").unlink()
    with pytest.raises(HypernymError, match="has no ImageSets/Main/train.txt"):
        prepared(tmp_path / "voc", tmp_path / "o5")


def test_rerun_after_a_crash_keeps_shards_and_their_annotation_counts(tmp_path, in_process,
                                                                      monkeypatch):
    expected = make_coco(tmp_path / "coco")
    out = tmp_path / "out"

    def crash(*_):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:  # dies after every shard, before the manifest
        patch.setattr(prepare_module, "write_manifest", crash)
        with pytest.raises(RuntimeError, match="killed"):
            prepared(tmp_path / "coco", out)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again, samples = prepared(tmp_path / "coco", out)
    assert all(p.stat().st_mtime_ns == stamp[p.name] for p in out.glob("*.tar"))  # reused
    clean, _ = prepared(tmp_path / "coco", tmp_path / "clean")
    assert again.stats == clean.stats and again.dropped == clean.dropped
    assert again.fingerprint == clean.fingerprint
    assert again.stats["annotations"]["splits"]["train"]["boxes"] == sum(
        len(json.loads(s["json"])["boxes"]) for s in samples["train"]) > 0
    assert len(expected) == 9
