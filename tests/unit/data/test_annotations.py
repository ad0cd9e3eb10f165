"""Sample-side annotations: a shard sample's json as an `Annotation`, and boxes that follow the
image through every crop, flip and resize of `BoxTransform` (each box is drawn as a filled
rectangle in the generated image, so the transformed image says where the box must be)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from hypernym.data.annotations import BoxTransform, multi_hot, parse_annotation
from tests.annotated import found_box

RED, GREEN = (255, 40, 40), (40, 255, 40)
META = {"labels": [0, 3], "size": [160, 120], "boxes": [
    {"class": 0, "box": [20, 30, 70, 90], "flags": ["difficult"]},
    {"class": 3, "box": [100, 10, 150, 60], "flags": ["crowd", "truncated"]}]}


def image() -> bytes:
    pixels = np.full((120, 160, 3), 20, np.uint8)
    pixels[30:90, 20:70] = RED
    pixels[10:60, 100:150] = GREEN
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_parse_annotation():
    ann = parse_annotation(json.dumps(META).encode())
    assert ann.labels == [0, 3] and ann.size == (160, 120)
    assert ann.boxes.dtype == torch.float32 and ann.boxes.tolist() == [[20, 30, 70, 90],
                                                                       [100, 10, 150, 60]]
    assert ann.box_classes.tolist() == [0, 3]
    assert ann.flagged("difficult").tolist() == [True, False]
    assert ann.flagged("crowd").tolist() == [False, True]
    assert ann.flagged("truncated").tolist() == [False, True]
    # a sample of a dataset prepared without annotations: its cls is its one label
    plain = parse_annotation({"class_id": "n01440764", "source": "x.tar"}, cls=b"7")
    assert plain.labels == [7] and plain.boxes.shape == (0, 4) and plain.size is None
    assert parse_annotation({"labels": [], "boxes": []}).labels == []
    with pytest.raises(ValueError, match="malformed annotation"):
        parse_annotation({"labels": [1], "boxes": [{"class": 1, "box": [1, 2]}]})
    with pytest.raises(ValueError):
        parse_annotation(b"not json")


def test_multi_hot():
    assert multi_hot([0, 3], 5).tolist() == [1, 0, 0, 1, 0]
    assert multi_hot([], 3).tolist() == [0, 0, 0]


def check_follows(out: torch.Tensor, target: dict, *, tolerance: float = 1.5,
                  dropped_unseen: bool = True) -> None:
    """Every kept box is on its rectangle; a class whose box was dropped is not in sight
    (``dropped_unseen``; SSD's IoU crop drops a box whose centre it cut off, seen or not)."""
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    jpg = io.BytesIO()
    Image.fromarray(out.permute(1, 2, 0).numpy()).save(jpg, "PNG")
    kept = dict(zip(target["labels"].tolist(), target["boxes"].tolist(), strict=True))
    assert target["flags"].tolist() == [{0: 1, 3: 2 | 4}[c] for c in kept]  # flags kept aligned
    pixels = np.asarray(Image.open(jpg).convert("RGB"), np.int32)
    for label, colour in ((0, RED), (3, GREEN)):
        visible = (np.abs(pixels - np.array(colour)).max(axis=-1) < 90).sum()
        if label not in kept:
            assert visible <= 3 or not dropped_unseen, (label, visible)  # a sliver may remain
            continue
        seen = found_box(jpg.getvalue(), kept[label], colour, margin=2)
        assert seen is not None and np.allclose(kept[label], seen, atol=tolerance), \
            (label, kept[label], seen)


@pytest.mark.parametrize("crop", ["resized", "iou", "none"])
def test_boxes_follow_every_crop_flip_and_resize(crop):
    torch.manual_seed(0)
    transform = BoxTransform(32, train=True, crop=crop, scale=(0.3, 1.0))
    ann, data = parse_annotation(META), image()
    flipped = lost = 0
    for _ in range(40):
        out, target = transform(data, ann)
        check_follows(out, target, dropped_unseen=crop != "iou")
        boxes = dict(zip(target["labels"].tolist(), target["boxes"].tolist(), strict=True))
        flipped += 0 in boxes and 3 in boxes and boxes[0][0] > boxes[3][0]  # red right of green
        lost += len(boxes) < 2
    assert flipped > 5  # the flip happened, and the boxes went with it
    if crop == "resized":
        assert lost > 0  # some crops cut a rectangle away, and its box went too


def test_eval_keeps_every_box_and_degenerate_boxes_go():
    out, target = BoxTransform(32, train=False)(image(), parse_annotation(META))
    check_follows(out, target)
    assert target["labels"].tolist() == [0, 3]
    assert torch.allclose(target["boxes"], torch.tensor([[4.0, 8.0, 14.0, 24.0],
                                                         [20.0, 8 / 3, 30.0, 16.0]]))
    tiny = {**META, "boxes": [*META["boxes"], {"class": 1, "box": [5, 5, 5.5, 40], "flags": []}]}
    _, target = BoxTransform(32, train=False)(image(), parse_annotation(tiny))
    assert target["labels"].tolist() == [0, 3]  # under a pixel wide: dropped, label and all
    with pytest.raises(ValueError, match="crop is 'random'"):
        BoxTransform(32, train=True, crop="random")
    with pytest.raises(ValueError, match="corrupt image"):
        BoxTransform(32, train=False)(b"\xff\xd8\xff garbage", parse_annotation(META))
