"""The sample codec of detection: a shard sample's image and boxes as a detector's input.

Training samples go through `hypernym.data.annotations.BoxTransform` (torchvision's
``transforms.v2``: the boxes follow every crop, flip and resize, and boxes left degenerate are
dropped); the target is what torchvision's detectors train on, ``{"boxes": float32 [M, 4] XYXY,
"labels": int64 [M]}``, with labels ``class index + 1`` (0 is their background). Crowd regions
are not trained on.

Evaluation samples are resized to the training size, and their target keeps every box where the
stored image has it, with ``iscrowd`` (crowd and difficult boxes: COCO's evaluation ignores
detections matched to them) and the stored image's ``size`` ([height, width]): predictions are
scaled back to the stored image before they are scored, so the figures (and a COCO results
file) speak of the dataset's own pixels.

A batch's targets are a list, one dict per image: images hold different numbers of boxes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from hypernym.data.annotations import BoxTransform, parse_annotation
from hypernym.data.codec import RawSample

__all__ = ["BoxCodec"]


class BoxCodec:
    """``jpg`` and ``json`` members -> (uint8 [3, S, S] image, detection target).

    Args:
        img_size: S, the side images are resized to.
        train: training augmentation (`for_reading` gives the codec of either kind).
        crop: `BoxTransform`'s crop (``none``, ``resized``, ``iou``).
        scale: the crop's area range.
        flip: random horizontal flips.
        min_box_size: training boxes smaller than this (pixels, either side) are dropped.
    """

    members = ("jpg", "json")
    packs_ints = False

    def __init__(self, img_size: int, *, train: bool = True,
                 crop: Literal["none", "resized", "iou"] = "none",
                 scale: tuple[float, float] = (0.08, 1.0), flip: bool = True,
                 min_box_size: float = 1.0) -> None:
        self.img_size, self.train = img_size, train
        self.options = {"crop": crop, "scale": tuple(scale), "flip": flip,
                        "min_box_size": min_box_size}
        self.augment = BoxTransform(img_size, train=True, **self.options) if train else None

    def for_reading(self, *, train: bool) -> BoxCodec:
        """The codec for a training or an evaluation pass (the reader asks for each)."""
        return BoxCodec(self.img_size, train=train, **self.options)

    def __call__(self, raw: RawSample, transform: Callable[[bytes], Any]) -> tuple[Any, dict]:
        """Raises ValueError (the reader skips and counts the sample) for an unreadable image
        or annotation."""
        annotation = parse_annotation(raw.fields["json"])
        if self.augment is not None:
            keep = ~annotation.flagged("crowd")
            trained = dataclasses.replace(annotation, boxes=annotation.boxes[keep],
                                          box_classes=annotation.box_classes[keep],
                                          flags=annotation.flags[keep])
            image, target = self.augment(raw.fields["jpg"], trained)
            return image, {"boxes": target["boxes"].as_subclass(torch.Tensor).float(),
                           "labels": target["labels"] + 1}
        pixels = _decode(raw.fields["jpg"])
        ignored = annotation.flagged("crowd") | annotation.flagged("difficult")
        target = {"boxes": annotation.boxes, "labels": annotation.box_classes + 1,
                  "iscrowd": ignored.to(torch.int64),
                  "size": torch.tensor(pixels.shape[-2:], dtype=torch.int64)}
        return TF.resize(pixels, [self.img_size, self.img_size], antialias=True), target

    def collate(self, targets: list[dict]) -> list[dict]:
        return list(targets)


def _decode(data: bytes) -> torch.Tensor:
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            mode=ImageReadMode.RGB)
    except RuntimeError as exc:  # libjpeg's errors (truncated, corrupt) come as these
        raise ValueError(f"corrupt image: {str(exc).splitlines()[-1]}") from None
