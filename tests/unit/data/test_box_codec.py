"""Detection's sample codec: training targets follow the augmentation and leave crowds out,
evaluation targets keep every box in the stored image's pixels, and the reader hands each pass
the codec of its kind, batching images with different numbers of boxes."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from hypernym.data.box_codec import BoxCodec
from hypernym.data.codec import RawSample
from hypernym.data.manifest import ClassInfo, Manifest, ShardInfo
from hypernym.data.reader import make_loader

META = {"labels": [0, 2], "size": [80, 60], "boxes": [
    {"class": 0, "box": [10, 10, 40, 50], "flags": []},
    {"class": 2, "box": [50, 5, 75, 30], "flags": ["difficult"]},
    {"class": 2, "box": [0, 0, 80, 60], "flags": ["crowd"]}]}


def jpeg(width: int = 80, height: int = 60) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(out, "JPEG")
    return out.getvalue()


def raw(meta: dict, data: bytes | None = None) -> RawSample:
    return RawSample("k", {"jpg": data or jpeg(), "json": json.dumps(meta).encode()}, 0, 0, "s")


def test_training_targets_follow_the_augmentation_without_crowds():
    torch.manual_seed(0)
    codec = BoxCodec(32, crop="none", flip=True)
    seen_flipped = False
    for _ in range(20):
        image, target = codec(raw(META), transform=None)
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert target["labels"].tolist() == [1, 3]  # class + 1; the crowd box is left out
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
        x0 = target["boxes"][0, 0].item()
        assert x0 == pytest.approx(10 * 32 / 80) or x0 == pytest.approx(32 - 40 * 32 / 80)
        seen_flipped |= x0 > 10
    assert seen_flipped
    # a crop that cuts boxes away drops them with their labels
    codec = BoxCodec(32, crop="resized", scale=(0.05, 0.1), flip=False)
    counts = {len(codec(raw(META), None)[1]["labels"]) for _ in range(30)}
    assert 0 in counts or 1 in counts


def test_evaluation_targets_keep_every_box_in_stored_pixels():
    codec = BoxCodec(32, crop="resized", scale=(0.05, 0.1)).for_reading(train=False)
    image, target = codec(raw(META), transform=None)
    assert image.shape == (3, 32, 32)
    assert target["boxes"].tolist() == [b["box"] for b in META["boxes"]]
    assert target["labels"].tolist() == [1, 3, 3]
    assert target["iscrowd"].tolist() == [0, 1, 1]  # difficult and crowd: COCO's ignore regions
    assert target["size"].tolist() == [60, 80]
    assert BoxCodec(32).for_reading(train=True).augment is not None
    with pytest.raises(ValueError, match="corrupt image"):
        codec(raw(META, b"\xff\xd8\xff not a jpeg"), None)
    with pytest.raises(ValueError, match="malformed annotation"):
        codec(raw({"boxes": [{"class": 1, "box": [1]}]}), None)


def test_the_reader_batches_varying_box_counts(tmp_path):
    name = "val-000000.tar"
    with wds.TarWriter(str(tmp_path / name)) as sink:
        for i in range(5):
            meta = {**META, "boxes": META["boxes"][:i % 3]}
            sink.write({"__key__": f"s{i}", "jpg": jpeg(), "json": json.dumps(meta).encode()})
    manifest = Manifest(name="t", recipe={}, fingerprint="-",
                        classes=[ClassInfo(index=i, id=f"c{i}", name=f"c{i}") for i in range(3)],
                        splits={"val": [ShardInfo(name=name, samples=5, bytes=0, sha256="-")]})
    loader = make_loader(manifest, str(tmp_path), "val", rank=0, world_size=1, epoch=0,
                         batch_size=4, img_size=24, train=False, codec=BoxCodec(24))
    batches = list(loader)
    assert [len(b.id) for b in batches] == [4, 1] and len(loader) == 2
    assert batches[0].image.shape == (4, 3, 24, 24)
    counts = sorted(len(t["boxes"]) for b in batches for t in b.target)
    assert counts == [0, 0, 1, 1, 2]
    assert all("iscrowd" in t for b in batches for t in b.target)  # the evaluation codec's
