"""Prepared shards are readable by the loaders users already have: plain webdataset (tested in
test_prepare), timm's WebDataset reader, and Ray Data's read_webdataset."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from hypernym.data.prepare import prepare

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
