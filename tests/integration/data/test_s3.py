"""The S3 path end to end, against an S3 endpoint served on 127.0.0.1 (moto's server mode):
prepare reads a source from S3 and writes shards + manifest to S3; the reader streams them."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from hypernym.data.manifest import read_manifest
from hypernym.data.prepare import prepare
from hypernym.data.reader import make_loader
from hypernym.data.storage import open_fs
from tests.servers import local_ray, moto_s3

from .conftest import make_winter21

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3():
    # Ray workers take the driver's environment when Ray starts: a fresh one, inside moto's.
    with moto_s3("hyp"), local_ray(fresh=True):
        yield "s3://hyp"


def test_prepare_from_and_to_s3_and_stream(s3, tmp_path):

    local = make_winter21(tmp_path / "raw", per_class=6)
    fs = open_fs(s3)[0]  # for the endpoint now set, not a cached one
    fs.put(str(local) + "/", f"{s3}/raw/", recursive=True)
    assert len(fs.ls(f"{s3}/raw")) == 5

    manifest = prepare(parse_recipe({
        "kind": "prepare", "source": f"{s3}/raw", "output": f"{s3}/ds", "val_per_class": 1,
        "min_per_class": 0,
        "image_size": 32, "shard_samples": 8,
    }), show_progress=False)
    assert manifest.num_samples("train") == 25 and manifest.num_samples("val") == 5
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3}/ds")}
    assert "manifest.json" in names and "_info.json" in names and "_parts" not in names
    assert read_manifest(f"{s3}/ds") == manifest

    loader = make_loader(manifest, f"{s3}/ds", "train", rank=0, world_size=1, epoch=0,
                         batch_size=5, img_size=24, train=True)
    batches = list(loader)
    assert len(batches) == 5 and batches[0][0].shape == (5, 3, 24, 24)


def test_local_csv_pointing_at_s3_images(s3, tmp_path):

    from .conftest import jpeg

    fs = open_fs(s3)[0]  # for the endpoint now set, not a cached one
    rows = ["path,label"]
    for i in range(8):
        fs.pipe_file(f"{s3}/loose/img{i}.jpg", jpeg(i))
        rows.append(f"{s3}/loose/img{i}.jpg,{'ab'[i % 2]}")
    table = tmp_path / "images.csv"
    table.write_text("\n".join(rows) + "\n")
    manifest = prepare(parse_recipe({
        "kind": "prepare", "source": str(table), "output": str(tmp_path / "ds"),
        "val_per_class": 1, "min_per_class": 0, "image_size": 16,
    }), show_progress=False)
    assert [c.id for c in manifest.classes] == ["a", "b"]
    assert manifest.num_samples("train") == 6 and manifest.num_samples("val") == 2


def test_annotated_sources_from_s3(s3, tmp_path):
    """A VOC layout on S3 to shards on S3, and ImageNet's per-synset box archives on S3 joined
    to winter21 tars on S3; the boxes come out where the images put them."""
    import webdataset as wds

    from tests.annotated import SYNSETS, check_samples, make_full_release, make_voc

    fs = open_fs(s3)[0]  # for the endpoint now set, not a cached one
    expected = make_voc(tmp_path / "voc")
    fs.put(str(tmp_path / "voc") + "/", f"{s3}/voc/", recursive=True)
    settings = {"kind": "prepare", "min_per_class": 0, "val_per_class": 1, "image_size": 48,
                "shard_samples": 4}
    manifest = prepare(parse_recipe({**settings, "source": f"{s3}/voc",
                                     "output": f"{s3}/voc-ds"}), show_progress=False)
    local = []
    for split in manifest.splits:
        for url in manifest.shard_urls(f"{s3}/voc-ds", split):
            local.append(tmp_path / url.rsplit("/", 1)[-1])
            local[-1].write_bytes(fs.cat_file(url))
    samples = list(wds.WebDataset([str(p) for p in local], shardshuffle=False))
    assert check_samples(samples, expected, [c.id for c in manifest.classes]) == 15
    assert manifest.dropped["annotation_missing"] == 1

    images, notes, expected = make_full_release(tmp_path / "release")
    fs.put(str(images) + "/", f"{s3}/w21/", recursive=True)
    fs.put(str(notes) + "/", f"{s3}/Annotation/", recursive=True)
    manifest = prepare(parse_recipe({**settings, "source": f"{s3}/w21",
                                     "boxes": f"{s3}/Annotation", "output": str(tmp_path / "ds"),
                                     "resize": "shorter"}), show_progress=False)
    samples = [s for split in manifest.splits for s in wds.WebDataset(
        manifest.shard_urls(str(tmp_path / "ds"), split), shardshuffle=False)]
    assert check_samples(samples, expected, SYNSETS) == sum(len(b) for _, b in expected.values())
    assert manifest.dropped["annotation_unreadable"] == 2
