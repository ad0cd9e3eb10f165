"""The teacher store's pure parts: which view a sample trains on (a pure function of seed, epoch
and key), the views' boxes, and the replaying codec on a sidecar written here by hand."""

from __future__ import annotations

import hashlib
import io
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from hypernym.data.codec import RawSample
from hypernym.data.device_decode import CropPlan
from hypernym.data.transforms import decode, eval_transform
from hypernym.errors import HypernymError
from hypernym.train.distill.codec import StoreCodec
from hypernym.train.distill.store_format import (
    SidecarInfo,
    StoreManifest,
    decode_sidecar,
    encode_sidecar,
)
from hypernym.train.distill.views import (
    BOX_SCALE,
    apply_view,
    choose_view,
    draw_views,
    pixel_box,
)


def test_view_choice_is_a_pure_function_of_seed_epoch_and_key():
    keys = [f"n0208{i:04d}_{i}" for i in range(2000)]
    first = [choose_view(7, 3, k, 50) for k in keys]
    # the same arguments, in another order, in another process state: the same views
    random.seed(123)
    torch.manual_seed(5)
    assert [choose_view(7, 3, k, 50) for k in reversed(keys)] == first[::-1]
    assert all(0 <= v < 50 for v in first)
    # every view is used, about evenly (2000 draws over 50 views: 40 each)
    counts = Counter(first)
    assert len(counts) == 50 and max(counts.values()) < 70
    # another epoch or seed draws again: most samples change view
    assert sum(a != b for a, b in zip(first, [choose_view(7, 4, k, 50) for k in keys],
                                       strict=True)) > 1800
    assert sum(a != b for a, b in zip(first, [choose_view(8, 3, k, 50) for k in keys],
                                       strict=True)) > 1800
    assert choose_view(0, 0, "x", 1) == 0


def test_views_are_seeded_by_key_and_leave_the_global_generator_alone():
    random.seed(1)
    before = random.getstate()
    a = draw_views("k1", 300, 400, views=8, seed=0, scale=(0.08, 1.0))
    assert random.getstate() == before
    assert draw_views("k1", 300, 400, views=8, seed=0, scale=(0.08, 1.0)) == a
    assert draw_views("k2", 300, 400, views=8, seed=0, scale=(0.08, 1.0)) != a
    assert draw_views("k1", 300, 400, views=8, seed=1, scale=(0.08, 1.0)) != a
    for top, left, h, w, flip in a:
        assert 0 <= top and 0 <= left and top + h <= BOX_SCALE + 1 and left + w <= BOX_SCALE + 1
        assert flip in (0, 1)
        box = pixel_box((top, left, h, w), 300, 400)
        assert box[0] + box[2] <= 300 and box[1] + box[3] <= 400
    # a box of the whole image maps to every pixel at any size
    assert pixel_box((0, 0, BOX_SCALE, BOX_SCALE), 37, 91) == (0, 0, 37, 91)


def jpeg(seed: int, size=(60, 44)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


VIEWS, CLASSES = 3, 6


@pytest.fixture
def store(tmp_path):
    """A hand-written flat store: train shard 't.tar' (2 samples, 3 views, top-2) and val shard
    'v.tar' (1 sample, the evaluation crop)."""
    train = {"box": np.array([[[0, 0, BOX_SCALE, BOX_SCALE], [0, 0, 32767, 32767],
                               [32768, 32768, 32767, 32767]]] * 2, dtype=np.uint16),
             "flip": np.array([[0, 1, 0], [1, 0, 1]], dtype=np.uint8),
             "prob": np.arange(12, dtype=np.float16).reshape(2, 3, 2) / 20,
             "cls": np.array([[[0, 1], [2, 3], [4, 5]], [[5, 4], [3, 2], [1, 0]]],
                             dtype=np.uint16),
             "rest": np.full((2, 3, 1), 0.25, dtype=np.float16)}
    val = {"prob": np.array([[[0.7, 0.2]]], dtype=np.float16),
           "cls": np.array([[[4, 0]]], dtype=np.uint16),
           "rest": np.array([[[0.1]]], dtype=np.float16),
           "top1": np.array([[4]], dtype=np.uint16)}
    infos = {}
    for split, shard, arrays, keys in (("train", "t.tar", train, ["a", "b"]),
                                       ("val", "v.tar", val, ["c"])):
        data = encode_sidecar(arrays, keys, shard=shard)
        name = shard.replace(".tar", ".safetensors")
        (tmp_path / name).write_bytes(data)
        infos[split] = [SidecarInfo(shard=shard, name=name, samples=len(keys), bytes=len(data),
                                    sha256=hashlib.sha256(data).hexdigest())]
    manifest = StoreManifest(
        kind="flat", teacher="t/1", teacher_arch="resnet10t", teacher_sha256="0" * 64,
        teacher_input_size=32, dataset="d", dataset_fingerprint="f", num_classes=CLASSES,
        levels=[list(range(CLASSES))], topk=[2], views=VIEWS, crop_scale=(0.08, 1.0), seed=0,
        class_dtype="uint16", bytes_per_view=1.0, sidecars=infos, fingerprint="s")
    return tmp_path, manifest


def raw(key, shard, epoch=0, image=0):
    return RawSample(key, {"jpg": jpeg(image), "cls": b"3"}, 0, epoch, f"/data/{shard}")


def test_the_codec_replays_the_chosen_view(store):
    root, manifest = store
    codec = StoreCodec(store=str(root), manifest=manifest, seed=11, img_size=24)
    for epoch in range(6):
        image, (label, cls, prob, rest, conf, top1) = codec(raw("b", "t.tar", epoch), None)
        view = choose_view(11, epoch, "b", VIEWS)
        sidecar = decode_sidecar((root / "t.safetensors").read_bytes())
        arrays = sidecar.arrays
        expected = apply_view(decode(jpeg(0), target=24), arrays["box"][1, view],
                              bool(arrays["flip"][1, view]), 24)
        assert torch.equal(image, expected) and image.shape == (3, 24, 24)
        assert label == 3 and conf is None and top1 == -1
        assert cls.tolist() == arrays["cls"][1, view].tolist()
        assert prob.tolist() == arrays["prob"][1, view].tolist() and rest.tolist() == [0.25]
    # device decode: the same box, in pixels of the full-size JPEG, for the device to cut
    encoded, _ = codec(raw("a", "t.tar", 2), CropPlan(24, train=True))
    view = choose_view(11, 2, "a", VIEWS)
    assert encoded.box == (*pixel_box(decode_sidecar((root / "t.safetensors").read_bytes())
                                      .arrays["box"][0, view], 44, 60),
                           int(view == 1))
    # evaluation: the reader's transform, and the stored answer for it
    transform = eval_transform(24)
    image, (label, cls, prob, rest, conf, top1) = codec(raw("c", "v.tar"), transform)
    assert torch.equal(image, transform(jpeg(0))) and cls.tolist() == [4, 0] and top1 == 4
    batch = codec.collate([codec(raw(k, "t.tar"), None)[1] for k in "ab"])
    assert batch.labels.tolist() == [3, 3] and batch.cls.dtype == torch.int64
    assert batch.prob.shape == (2, 2) and batch.rest.shape == (2, 1)
    assert batch.conf.shape == (2, 0) and batch.top1.tolist() == [-1, -1]


def test_the_codec_refuses_a_store_that_does_not_match(store):
    root, manifest = store
    codec = StoreCodec(store=str(root), manifest=manifest, seed=0, img_size=24)
    with pytest.raises(ValueError, match="no stored teacher answer"):  # skipped and counted
        codec(raw("zz", "t.tar"), None)
    with pytest.raises(HypernymError, match="no sidecar for shard other.tar"):
        codec(raw("a", "other.tar"), None)
    (root / "v.safetensors").write_bytes((root / "v.safetensors").read_bytes() + b" ")
    with pytest.raises(HypernymError, match="sha256 differs"):
        codec(raw("c", "v.tar"), eval_transform(24))
    # a pickled codec (a loader process) carries no loaded sidecars
    import pickle

    codec(raw("a", "t.tar"), None)
    assert not pickle.loads(pickle.dumps(codec))._cache


def test_the_codec_reads_a_sidecar_once_while_its_shard_is_in_the_shuffle_buffer(store):
    # The buffer swaps a random entry per sample read: samples of many shards come out
    # interleaved, and each lookup must not read and decode the sidecar again.
    root, manifest = store
    codec = StoreCodec(store=str(root), manifest=manifest, seed=0, img_size=24, shuffle_buffer=1)
    first = [codec(raw(k, s), eval_transform(24) if s == "v.tar" else None)[1]
             for k, s in (("a", "t.tar"), ("c", "v.tar"))]
    (root / "t.safetensors").unlink()
    (root / "v.safetensors").unlink()
    for _ in range(3):  # both kept (8 buffers' worth of samples): no read of the removed files
        assert codec(raw("a", "t.tar"), None)[1][1].tolist() == first[0][1].tolist()
        assert codec(raw("c", "v.tar"), eval_transform(24))[1][5] == 4
    assert list(codec._cache) == ["t.tar", "v.tar"] and codec._cached_samples == 3
