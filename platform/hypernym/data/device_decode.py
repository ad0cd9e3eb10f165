"""JPEG decode on the training device (`data.decode_on: device`): nvJPEG on a GPU.

Full-size JPEGs cost a CPU core about 2 ms each to decode; one H100 trains a compiled resnet50 at
about 5,500 img/s, more than 16 cores decode (docs/benchmarks.md, "GPU reference figures").
With this option the loader workers only read the tars, size each JPEG from its header and draw
the crop box and flip; the training process decodes the whole batch at once
(`torchvision.io.decode_jpeg` on a list, batched on CUDA), then crops and resizes each image on
the device. On a CPU device the same code runs on the CPU, which is how it is tested without a
GPU.

The crop distribution is the loader's: timm's RandomResizedCrop draw for training, and for
evaluation the box that timm's Resize(size / crop_pct) + CenterCrop(size) takes from the image.
"""

from __future__ import annotations

import io
import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor

from hypernym.data.transforms import draw_crop, jpeg_size

__all__ = ["CropPlan", "Encoded", "EncodedBatch", "encoded_batch", "decode_batch"]

log = logging.getLogger(__name__)


class Encoded(NamedTuple):
    """One sample as the loader leaves it: JPEG bytes and (top, left, height, width, flip)."""

    data: torch.Tensor  # uint8 [n]
    box: tuple[int, int, int, int, int]


class EncodedBatch(NamedTuple):
    """A batch of `Encoded`: the bytes end to end, their offsets, the boxes."""

    data: torch.Tensor  # uint8 [total]
    offsets: torch.Tensor  # int64 [B + 1]
    boxes: torch.Tensor  # int64 [B, 5]


class CropPlan:
    """The loader side: bytes -> `Encoded`, with the crop box drawn from the JPEG header.

    Raises ValueError for data nvJPEG can't take (not a JPEG): the reader skips and counts it.
    """

    def __init__(self, size: int, *, train: bool, scale: tuple[float, float] = (0.08, 1.0),
                 crop_pct: float = 0.875) -> None:
        self.size, self.train, self.scale, self.crop_pct = size, train, scale, crop_pct

    def __call__(self, data: bytes) -> Encoded:
        size = jpeg_size(data)
        if size is None or min(size) < 1:
            raise ValueError("not a JPEG (device decode takes JPEG only)")
        width, height = size
        if self.train:
            box = draw_crop(height, width, self.scale)
        else:
            top, left, h, w = self._eval_box(width, height)
            box = (top, left, max(h, 1), max(w, 1), 0)
        return Encoded(torch.frombuffer(bytearray(data), dtype=torch.uint8), box)

    def _eval_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The region of the full image that eval_transform keeps: torchvision's Resize of the
        shorter side to size / crop_pct (the longer side truncated), then CenterCrop(size)."""
        short = round(self.size / self.crop_pct)
        if width <= height:
            new_w, new_h = short, int(short * height / width)
        else:
            new_w, new_h = int(short * width / height), short
        sx, sy = width / new_w, height / new_h  # original pixels per resized pixel
        top = round((new_h - self.size) / 2) * sy
        left = round((new_w - self.size) / 2) * sx
        h, w = min(height, round(self.size * sy)), min(width, round(self.size * sx))
        return (min(max(round(top), 0), height - h), min(max(round(left), 0), width - w),
                h, w)


def encoded_batch(images: list[Encoded]) -> EncodedBatch:
    """The `EncodedBatch` of a batch's `Encoded` images (`hypernym.data.collate`)."""
    sizes = torch.tensor([0] + [len(e.data) for e in images], dtype=torch.int64)
    return EncodedBatch(torch.cat([e.data for e in images]), sizes.cumsum(0),
                        torch.tensor([e.box for e in images], dtype=torch.int64))


def decode_batch(batch: EncodedBatch, *, size: int, device: torch.device) -> torch.Tensor:
    """Decode, crop, resize (antialiased bilinear) and flip on ``device``: float [B,3,S,S] with
    0-255 values, channels-last. A JPEG the device can't decode is decoded on the CPU; one that
    can't be decoded at all is replaced by another image of the batch (logged)."""
    offsets = batch.offsets.tolist()
    datas = [batch.data[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    try:
        images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad image fails the batched call: go one by one
        images = [_decode_one(data, device) for data in datas]
    good = next((image for image in images if image is not None), None)
    if good is None:
        raise ValueError("no image of the batch could be decoded")
    out = torch.empty((len(datas), 3, size, size), device=device,
                      memory_format=torch.channels_last)
    for i, (image, box) in enumerate(zip(images, batch.boxes.tolist(), strict=True)):
        if image is None:
            log.warning("an image of the batch cannot be decoded; training on another "
                        "image of the batch in its place")
            image, box = good, [0, 0, good.shape[1], good.shape[2], 0]
        top, left, h, w, flip = box
        crop = image[None, :, top : top + h, left : left + w].float()
        resized = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)[0]
        out[i] = resized.flip(-1) if flip else resized
    return out


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:  # PIL, for what libjpeg-turbo refuses (full size: the box is in full-size pixels)
        return pil_to_tensor(Image.open(io.BytesIO(bytes(data))).convert("RGB")).to(device)
    except (OSError, ValueError):
        return None
