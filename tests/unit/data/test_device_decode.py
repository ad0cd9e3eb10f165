"""Decode on the training device (`data.decode_on: device`), run on the CPU here (the same code,
device="cpu"), and on CUDA where there is one: the loader ships JPEG bytes and crop boxes, the
device's images match what the loader-side transforms make of the same boxes, bad images don't
stop a batch, and the training step runs on such batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from hypernym.config import parse_recipe
from hypernym.data.codec import LabelCodec
from hypernym.data.collate import Collate
from hypernym.data.dataset import Dataset
from hypernym.data.device_decode import CropPlan, EncodedBatch, decode_batch
from hypernym.data.manifest import ClassInfo, Manifest, ShardInfo
from hypernym.data.reader import Sample, make_loader
from hypernym.data.transforms import eval_transform
from tests.unit.train.helpers import tiny_trainer

SIZE = 32


def photo(seed: int, size=(90, 70)) -> bytes:
    """A smooth, textured JPEG (gradients and a blob), so crops and flips show."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 255 // size[0], y * 255 // size[1],
                    ((x - 20 - seed) ** 2 + (y - 30) ** 2 < 300) * 200], axis=-1)
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


def dataset(root, n: int = 48, shard: int = 16) -> Manifest:
    infos = []
    for s in range(0, n, shard):
        name = f"train-{s // shard:06d}.tar"
        with wds.TarWriter(str(root / name)) as sink:
            for i in range(s, min(s + shard, n)):
                sink.write({"__key__": f"s{i}", "jpg": photo(i), "cls": str(i % 4).encode()})
        infos.append(ShardInfo(name=name, samples=min(shard, n - s), bytes=0, sha256="-"))
    classes = [ClassInfo(index=i, id=f"c{i}", name=f"c{i}") for i in range(4)]
    return Manifest(name="t", recipe={}, classes=classes,
                    splits={"train": infos, "val": infos}, fingerprint="-")


def reference(data: bytes, box) -> torch.Tensor:
    """What the loader-side transform makes of the same box: decode, crop, resize, flip."""
    top, left, h, w, flip = box
    image = TF.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))
    out = TF.resized_crop(image, top, left, h, w, [SIZE, SIZE], antialias=True)
    return out.flip(-1) if flip else out


def encoded(samples: list[bytes], *, train: bool) -> tuple[EncodedBatch, list]:
    plan = CropPlan(SIZE, train=train)
    collate = Collate(LabelCodec(), encoded=True)
    batch = collate([Sample(plan(d), 0, i, 0) for i, d in enumerate(samples)])
    return batch.image, batch.image.boxes.tolist()


@pytest.mark.parametrize("train", [True, False])
def test_device_images_match_the_loader_transform_of_the_same_box(train):
    samples = [photo(i, size=(90 + 7 * i, 70)) for i in range(12)]
    batch, boxes = encoded(samples, train=train)
    out = decode_batch(batch, size=SIZE, device=torch.device("cpu"))
    assert out.shape == (12, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    for image, data, box in zip(out, samples, boxes, strict=True):
        # float resize vs torchvision's uint8 one: rounding apart
        assert (image - reference(data, box).float()).abs().max() <= 1.01
    if train:
        assert {b[4] for b in boxes} == {0, 1}  # both flips drawn
    else:  # the box is timm's eval crop: Resize(size / 0.875) + CenterCrop(size)
        for image, data in zip(out, samples, strict=True):
            expected = eval_transform(SIZE)(data).float()
            assert (image - expected).abs().mean() < 2.0


def test_a_bad_image_is_replaced_within_its_batch_and_non_jpeg_is_skipped_early():
    good = [photo(i) for i in range(4)]
    truncated = photo(9)[:400]  # a valid header: the loader side can't tell
    batch, _ = encoded(good + [truncated], train=False)
    out = decode_batch(batch, size=SIZE, device=torch.device("cpu"))
    assert out.shape[0] == 5 and torch.isfinite(out).all()
    png = io.BytesIO()
    Image.new("RGB", (20, 20)).save(png, "PNG")
    with pytest.raises(ValueError, match="not a JPEG"):
        CropPlan(SIZE, train=True)(png.getvalue())


def test_training_and_evaluation_run_on_device_decoded_batches(tmp_path):
    manifest = dataset(tmp_path)
    loader = make_loader(manifest, str(tmp_path), "train", rank=0, world_size=1, epoch=0,
                         batch_size=8, img_size=SIZE, train=True, num_workers=2,
                         decode_on="device")
    first = next(iter(loader))
    assert isinstance(first.image, EncodedBatch) and len(first.target) == 8
    trainer = tiny_trainer(Dataset(str(tmp_path), manifest), classes=4, img_size=SIZE,
                           data={"batch_size": 8, "loader_workers": 2, "decode_on": "device"})
    trained = []
    trainer.records.append(Recorder(trained))
    metrics = trainer.train_epoch(0)
    assert trainer.state.global_step == len(loader) == 6 and sorted(trained) == list(range(48))
    assert np.isfinite(metrics["train/loss"])
    assert 0 <= trainer.validate()["val/top1"] <= 1


class Recorder:
    """A step record: the ids every optimizer step trained on."""

    def __init__(self, ids: list) -> None:
        self.ids = ids

    def add(self, epoch: int, step: int, batches: list) -> None:
        self.ids.extend(i for batch in batches for i in batch.id.tolist())


def test_rand_augment_and_device_decode_are_refused_together():
    with pytest.raises(Exception, match="decode_on"):
        parse_recipe({"kind": "pretrain", "name": "x", "data": {
            "path": "/d", "decode_on": "device", "rand_augment": [2, 9]},
            "model": {"arch": "resnet10t"}})


@pytest.mark.gpu
def test_nvjpeg_on_the_gpu_matches_the_cpu():
    samples = [photo(i, size=(90 + 7 * i, 70)) for i in range(16)]
    batch, boxes = encoded(samples, train=True)
    gpu = decode_batch(batch, size=SIZE, device=torch.device("cuda")).cpu()
    for image, data, box in zip(gpu, samples, boxes, strict=True):
        # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a few levels
        assert (image - reference(data, box).float()).abs().mean() < 3.0
