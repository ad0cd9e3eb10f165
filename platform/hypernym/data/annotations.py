"""Sample-side annotations: a shard sample's ``json`` member as a typed `Annotation`, and the
train/eval transform that moves its boxes with every crop, flip and resize of the image.

What prepare writes (docs/annotations.md): ``labels`` (class indices, sorted), ``boxes`` (each
``{"class": index, "box": [x0, y0, x1, y1], "flags": [...]}`` in the stored image's continuous
pixel coordinates) and ``size`` ([width, height] of the stored image). A sample of a dataset
prepared without annotations has none of these; its one label is its ``cls``.

The transform is torchvision's ``transforms.v2`` on ``tv_tensors.BoundingBoxes``: torchvision
already moves boxes with each geometric transform, clamps them to the image and drops the
degenerate ones (``SanitizeBoundingBoxes``), so nothing of that is written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

__all__ = ["FLAG_BITS", "Annotation", "BoxTransform", "multi_hot", "parse_annotation"]

# Each flag a box may carry (data/boxes.py FLAGS) as a bit of `Annotation.flags`.
FLAG_BITS = {"difficult": 1, "crowd": 2, "truncated": 4, "occluded": 8}


@dataclass(frozen=True)
class Annotation:
    """One sample's annotation.

    Attributes:
        labels: the image's class indices, sorted (every class with an object, difficult and
            crowd ones included).
        boxes: float32 [N, 4], x0 y0 x1 y1 in the stored image's pixels.
        box_classes: int64 [N], the class index of each box.
        flags: int64 [N], each box's flags as a bitmask of `FLAG_BITS`.
        size: (width, height) of the stored image, or None when the json does not say.
    """

    labels: list[int]
    boxes: torch.Tensor
    box_classes: torch.Tensor
    flags: torch.Tensor
    size: tuple[int, int] | None = None

    def flagged(self, name: str) -> torch.Tensor:
        """bool [N]: which boxes carry the flag ``name`` (e.g. ``difficult``)."""
        return (self.flags & FLAG_BITS[name]) != 0


def parse_annotation(meta: bytes | str | dict, cls: bytes | str | int | None = None) -> Annotation:
    """A sample's ``json`` member (bytes, text or the decoded dict) as an `Annotation`.

    ``cls``: the sample's ``cls`` member, the one label of a sample without ``labels`` (a
    dataset prepared without annotations).

    Raises:
        ValueError: the member is not JSON, or its labels or boxes are malformed.
    """
    if not isinstance(meta, dict):
        meta = json.loads(meta)
    try:
        if "labels" in meta:
            labels = sorted(int(c) for c in meta["labels"])
        else:
            labels = [] if cls is None else [int(cls)]
        raw = meta.get("boxes") or []
        boxes = torch.tensor([[float(v) for v in b["box"]] for b in raw],
                             dtype=torch.float32).reshape(-1, 4)
        classes = torch.tensor([int(b["class"]) for b in raw], dtype=torch.int64)
        flags = torch.tensor([sum(FLAG_BITS.get(f, 0) for f in b.get("flags", ())) for b in raw],
                             dtype=torch.int64)
        size = tuple(int(v) for v in meta["size"]) if "size" in meta else None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"malformed annotation: {exc!r}") from None
    return Annotation(labels, boxes, classes, flags, size)


def multi_hot(labels: list[int], num_classes: int) -> torch.Tensor:
    """float32 [num_classes]: 1 at each label, 0 elsewhere (a multi-label target)."""
    target = torch.zeros(num_classes, dtype=torch.float32)
    if labels:
        target[torch.as_tensor(labels, dtype=torch.int64)] = 1.0
    return target


class BoxTransform:
    """Image bytes + `Annotation` -> (uint8 [3, S, S] image, target) with the boxes following.

    Training: a crop (``resized``: RandomResizedCrop; ``iou``: SSD's RandomIoUCrop, which keeps
    some box's centre and overlap, then a resize; ``none``: only the resize), a horizontal flip,
    then boxes clamped to the image and those under ``min_box_size`` pixels dropped.
    Evaluation: the whole image resized to S x S (every box kept). The target is
    ``{"boxes": BoundingBoxes [M, 4] XYXY, "labels": int64 [M], "flags": int64 [M]}`` (M <= N:
    boxes cropped away are gone; the image-level labels stay in the `Annotation`).
    """

    def __init__(self, img_size: int, *, train: bool,
                 crop: Literal["resized", "iou", "none"] = "resized",
                 scale: tuple[float, float] = (0.08, 1.0), flip: bool = True,
                 min_box_size: float = 1.0) -> None:
        if crop not in ("resized", "iou", "none"):
            raise ValueError(f"crop is {crop!r}: use resized, iou or none")
        self.size, self.train, self.crop = img_size, train, crop
        resize = v2.Resize((img_size, img_size), antialias=True)
        steps: list[Any] = []
        if train and crop == "resized":
            steps.append(v2.RandomResizedCrop((img_size, img_size), scale=scale, antialias=True))
        else:
            steps.append(resize)
        if train and flip:
            steps.append(v2.RandomHorizontalFlip())
        self.iou_crop = None
        if train and crop == "iou":  # RandomIoUCrop marks boxes it cuts off as degenerate
            self.iou_crop = v2.Compose([v2.RandomIoUCrop(min_scale=scale[0]),
                                        v2.SanitizeBoundingBoxes(labels_getter=_box_fields)])
        self.pipeline = v2.Compose([
            *steps, v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=min_box_size, labels_getter=_box_fields)])

    def __call__(self, data: bytes, annotation: Annotation) -> tuple[torch.Tensor, dict]:
        """Raises OSError or ValueError when the bytes are not a readable image."""
        try:
            pixels = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                  mode=ImageReadMode.RGB)
        except RuntimeError as exc:  # libjpeg's errors (truncated, corrupt) come as these
            raise ValueError(f"corrupt image: {str(exc).splitlines()[-1]}") from None
        image = tv_tensors.Image(pixels)
        target = {
            "boxes": tv_tensors.BoundingBoxes(annotation.boxes.clone(), format="XYXY",
                                              canvas_size=tuple(pixels.shape[-2:])),
            "labels": annotation.box_classes.clone(), "flags": annotation.flags.clone()}
        if self.iou_crop is not None and len(annotation.boxes):
            # RandomIoUCrop needs a box to aim at; it may leave the image whole.
            image, target = self.iou_crop(image, target)
        image, target = self.pipeline(image, target)
        return image.as_subclass(torch.Tensor), target


def _box_fields(inputs: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """What `SanitizeBoundingBoxes` drops along with a box: its class and its flags (it is
    called with the transform's inputs, (image, target))."""
    return inputs[1]["labels"], inputs[1]["flags"]
