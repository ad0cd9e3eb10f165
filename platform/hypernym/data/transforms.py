"""Read-side decode and augmentation: JPEG bytes -> uint8 CHW tensors.

Images stay uint8 until they reach the training device, where the loop converts and normalises
them (less to copy, and the device does the arithmetic).
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torchvision.transforms import v2

__all__ = ["decode", "eval_transform", "train_transform"]


def decode(data: bytes, *, target: int) -> Image.Image:
    """Decode a JPEG at reduced size where the crop allows (DCT scaling), as RGB."""
    image = Image.open(io.BytesIO(data))
    # draft picks the smallest 1/2, 1/4, 1/8 scale that stays >= the requested size; asking for
    # 2x the crop keeps RandomResizedCrop's zoomed-in crops sharp.
    image.draft("RGB", (target * 2, target * 2))
    return image.convert("RGB")


def train_transform(img_size: int, scale: tuple[float, float] = (0.08, 1.0)):
    """RandomResizedCrop + horizontal flip, to a uint8 tensor."""
    pipeline = v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(img_size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
    ])
    return _with_decode(pipeline, img_size)


def eval_transform(img_size: int, crop_pct: float = 0.875):
    """Resize the shorter side to img_size/crop_pct, center crop (timm's eval convention)."""
    pipeline = v2.Compose([
        v2.PILToTensor(),
        v2.Resize(int(round(img_size / crop_pct)), antialias=True),
        v2.CenterCrop(img_size),
    ])
    return _with_decode(pipeline, img_size)


def _with_decode(pipeline, img_size: int):
    def apply(data: bytes) -> torch.Tensor:
        return pipeline(decode(data, target=img_size))

    return apply
