"""prepare on real Ray tasks: winter21 tars and class folders -> shards + manifest."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
import torch
import webdataset as wds
from PIL import Image

from hypernym.config import parse_recipe
from hypernym.data.manifest import read_manifest
from hypernym.data.prepare import prepare
from hypernym.data.reader import make_loader
from hypernym.errors import HypernymError

from .conftest import SYNSETS, jpeg, make_winter21, small_recipe

pytestmark = pytest.mark.integration


def recipe(source, output, **kw):
    return small_recipe(source, output, **{"val_per_class": 2, "image_size": 32,
                                           "shard_samples": 16, **kw})


def test_winter21_to_mixed_shards_with_bad_inputs_counted(tmp_path, ray_local):
    src = make_winter21(tmp_path / "raw", bad=True)
    manifest = prepare(recipe(src, tmp_path / "out", max_bad_fraction=0.2), show_progress=False)

    assert [c.id for c in manifest.classes] == SYNSETS
    # every good image is written once; the held-out 2 per class are drawn before decoding,
    # so a bad image drawn for validation leaves its class one short there
    assert manifest.num_samples("val") + manifest.num_samples("train") == 12 * len(SYNSETS)
    assert 2 * len(SYNSETS) - 2 <= manifest.num_samples("val") <= 2 * len(SYNSETS)
    assert manifest.recipe["name"] == "hypernym-prepare" and manifest.recipe["params"]["seed"] == 0
    assert manifest.dropped["skipped_corrupt_image"] == 2  # garbage + truncated
    assert manifest.dropped["skipped_empty_file"] == 1
    assert manifest.dropped["skipped_not_an_image"] == 1
    assert len(manifest.fingerprint) == 64

    urls = manifest.shard_urls(str(tmp_path / "out"), "train")
    assert len(urls) == 4
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == manifest.num_samples("train")
    for url in urls:  # classes are mixed in every shard, though the source is a tar per class
        labels = Counter(int(s["cls"]) for s in wds.WebDataset([url], shardshuffle=False))
        assert len(labels) >= 3, labels
    first = samples[0]
    assert set(first) >= {"__key__", "jpg", "cls", "json"} and "." not in first["__key__"]
    assert json.loads(first["json"])["class_id"] in SYNSETS
    assert manifest.classes[0].name != manifest.classes[0].id  # a WordNet lemma
    assert manifest.hierarchy and manifest.hierarchy["kind"] == "wordnet"
    # the manifest on disk is the one returned, and the work files are gone
    assert read_manifest(str(tmp_path / "out")) == manifest
    assert not (tmp_path / "out" / "_parts").exists()

    # The reader on 2 ranks: equal full batches in training (2 loader workers on rank 1),
    # and evaluation covers every held-out sample exactly once.
    out = str(tmp_path / "out")
    steps = manifest.num_samples("train") // (2 * 5)
    for rank, workers in ((0, 0), (1, 2)):
        batches = list(make_loader(manifest, out, "train", rank=rank, world_size=2, epoch=1,
                                   batch_size=5, img_size=24, train=True, num_workers=workers))
        assert len(batches) == steps
        assert all(x.shape == (5, 3, 24, 24) and x.dtype == torch.uint8 and
                   y.dtype == torch.int64 for x, y, *_ in batches)
    val_labels = Counter(int(s["cls"]) for s in wds.WebDataset(
        manifest.shard_urls(out, "val"), shardshuffle=False))
    seen = Counter()
    for rank in (0, 1):
        for _, labels, *_ in make_loader(manifest, out, "val", rank=rank, world_size=2, epoch=0,
                                     batch_size=4, img_size=24, train=False):
            seen.update(labels.tolist())
    assert seen == val_labels and sum(seen.values()) == manifest.num_samples("val")


def test_folder_source_png_and_splits(tmp_path, ray_local):
    for c in ("cat", "dog", "fish"):
        (tmp_path / "raw" / c).mkdir(parents=True)
        for i in range(5):
            Image.open(__import__("io").BytesIO(jpeg(i))).save(tmp_path / "raw" / c / f"{i}.png")
    manifest = prepare(recipe(tmp_path / "raw", tmp_path / "out", val_per_class=1,
                              resize="shorter"), show_progress=False)
    assert [c.name for c in manifest.classes] == ["cat", "dog", "fish"]
    assert manifest.hierarchy["kind"] == "flat"
    assert manifest.num_samples("val") == 3 and manifest.num_samples("train") == 12
    loader = make_loader(manifest, str(tmp_path / "out"), "train", rank=0, world_size=1, epoch=0,
                         batch_size=4, img_size=24, train=True)
    batches = list(loader)
    assert len(batches) == 3 and batches[0][0].shape == (4, 3, 24, 24)


def test_errors_before_any_work(tmp_path, monkeypatch):
    import hypernym.runtime

    def no_ray(**_):
        raise AssertionError("Ray was started before the source was checked")

    monkeypatch.setattr(hypernym.runtime, "ensure_ray", no_ray)
    with pytest.raises(HypernymError, match="does not exist"):
        prepare(recipe(tmp_path / "missing", tmp_path / "out"), show_progress=False)
    (tmp_path / "mixed" / "a").mkdir(parents=True)
    (tmp_path / "mixed" / "x.tar").write_bytes(b"")
    with pytest.raises(HypernymError, match="cannot tell the layout"):
        prepare(recipe(tmp_path / "mixed", tmp_path / "out"), show_progress=False)
    assert not (tmp_path / "out").exists()
    src = make_winter21(tmp_path / "raw", per_class=2)
    for output in (src, src / "ds", tmp_path):  # the stale-shard clean-up would eat the source
        with pytest.raises(HypernymError, match="overlaps the source"):
            prepare(recipe(src, output, overwrite=True), show_progress=False)
    assert len(list(src.glob("*.tar"))) == len(SYNSETS)


def test_existing_dataset_needs_overwrite_and_bad_budget(tmp_path, ray_local):
    src = make_winter21(tmp_path / "raw", per_class=4, bad=True)
    with pytest.raises(HypernymError, match=r"worst sources: n02085620\.tar"):
        prepare(recipe(src, tmp_path / "out"), show_progress=False)  # 4 bad of 24: over 10 %
    assert not (tmp_path / "out" / "manifest.json").exists()  # never looks finished
    prepare(recipe(src, tmp_path / "out", max_bad_fraction=0.5), show_progress=False)
    with pytest.raises(HypernymError, match="overwrite=true"):
        prepare(recipe(src, tmp_path / "out", max_bad_fraction=0.5), show_progress=False)
    again = prepare(recipe(src, tmp_path / "out", max_bad_fraction=0.5, overwrite=True),
                    show_progress=False)
    assert again.num_samples("train") + again.num_samples("val") == 4 * len(SYNSETS)


def crash_before_manifest(monkeypatch):
    """The run dies after every shard is written, before the manifest (the records stay)."""
    import hypernym.data.prepare as module

    def crash(*_):
        raise RuntimeError("killed")

    monkeypatch.setattr(module, "write_manifest", crash)


def test_rerun_after_a_crash_keeps_finished_shards(tmp_path, ray_local, monkeypatch):
    src = make_winter21(tmp_path / "raw")
    out = tmp_path / "out"
    crash_before_manifest(monkeypatch)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(recipe(src, out), show_progress=False)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists() and list((out / "_parts").glob("*.json"))
    victim = "train-000001.tar"
    (out / victim).write_bytes(b"half-written")  # one shard damaged: must be redone
    (out / "train-000099.tar").write_bytes(b"")  # a stray from some older plan
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = prepare(recipe(src, out), show_progress=False)
    changed = {p.name for p in out.glob("*.tar") if p.stat().st_mtime_ns != stamp[p.name]}
    assert changed == {victim}
    assert not (out / "train-000099.tar").exists()  # only the manifest's shards remain
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(
        s.name for v in again.splits.values() for s in v)
    clean = prepare(recipe(src, tmp_path / "clean"), show_progress=False)
    assert again.fingerprint == clean.fingerprint  # the same dataset as an uninterrupted run


def test_a_crashed_run_with_another_recipe_is_not_reused(tmp_path, ray_local, monkeypatch):
    src = make_winter21(tmp_path / "raw", per_class=6)
    out = tmp_path / "out"
    crash_before_manifest(monkeypatch)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(recipe(src, out, image_size=32), show_progress=False)
    monkeypatch.undo()
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert stamp, "the crashed run left no shard to reuse"
    manifest = prepare(recipe(src, out, image_size=24), show_progress=False)
    assert all(p.stat().st_mtime_ns != stamp[p.name] for p in out.glob("*.tar"))
    sizes = [Image.open(io.BytesIO(sample["jpg"])).size for sample in
             wds.WebDataset(manifest.shard_urls(str(out), "train"), shardshuffle=False)]
    assert len(sizes) == manifest.num_samples("train") > 0 and set(sizes) == {(24, 24)}


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    """Kill a real `hypernym prepare` process (and its Ray) mid-run; rerun finishes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    src = make_winter21(tmp_path / "raw", per_class=40)
    out = tmp_path / "out"
    args = ["--source", str(src), "--output", str(out), "--set", "val_per_class=2",
            "--set", "min_per_class=0", "--set", "image_size=32", "--set", "shard_samples=4"]
    exe = str(Path(sys.executable).parent / "hypernym")
    proc = subprocess.Popen([exe, "prepare", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HYPERNYM_HOME": str(tmp_path / "home")})
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "_parts").glob("*.json")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait(30)
    done = {p.stem for p in (out / "_parts").glob("*.json")}
    assert done, "the run was killed before any shard finished"
    assert not (out / "manifest.json").exists()  # a killed run never looks finished
    stamps = {name: (out / name).stat().st_mtime_ns for name in done}

    manifest = prepare(parse_recipe({
        "kind": "prepare", "source": str(src), "output": str(out), "val_per_class": 2,
        "min_per_class": 0, "image_size": 32, "shard_samples": 4}), show_progress=False)
    total = len(manifest.splits["train"]) + len(manifest.splits["val"])
    assert len(done) < total  # there was work left
    assert all((out / name).stat().st_mtime_ns == stamps[name] for name in done)  # kept
    assert manifest.num_samples("train") + manifest.num_samples("val") == 40 * len(SYNSETS)
    clean = prepare(parse_recipe({
        "kind": "prepare", "source": str(src), "output": str(tmp_path / "clean"),
        "val_per_class": 2, "min_per_class": 0, "image_size": 32, "shard_samples": 4}),
        show_progress=False)
    assert clean.fingerprint == manifest.fingerprint  # same dataset as an uninterrupted run
