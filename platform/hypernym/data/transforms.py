"""Read-side decode and augmentation: JPEG bytes -> uint8 CHW tensors.

Images stay uint8 until they reach the training device, where the loop converts and normalises
them (less to copy, and the device does the arithmetic).
"""

from __future__ import annotations

import io
import random

import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

__all__ = ["RandomResizedCropFlip", "decode", "draw_crop", "eval_transform", "jpeg_size",
           "train_transform"]


def decode(data: bytes, *, target: int) -> torch.Tensor:
    """JPEG bytes -> uint8 CHW RGB tensor, at reduced size when the target allows.

    When the image is at least 4x the target, PIL's DCT-domain scaling (``draft``) decodes at
    1/2 to 1/8 of the size, still >= 2x the target so RandomResizedCrop's zoomed-in crops stay
    sharp. Otherwise libjpeg-turbo through ``torchvision.io.decode_jpeg``, measured 1.3x faster
    than PIL at full size on this project's machines.

    Raises:
        OSError or ValueError: the bytes are not a readable image (the reader skips it).
    """
    size = jpeg_size(data)
    if size is None or min(size) >= 4 * target:  # not a plain JPEG, or a large one: PIL
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (target * 2, target * 2))
        return pil_to_tensor(image.convert("RGB"))
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)
    except RuntimeError as exc:  # libjpeg-turbo's errors (truncated, corrupt) come as these
        raise ValueError(f"corrupt JPEG: {str(exc).splitlines()[-1]}") from None


# Start-of-frame markers carry the size: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, or None if ``data`` is not a JPEG we can
    size this way. Walks the marker segments: about 10x cheaper than `PIL.Image.open`, which
    cost 10% of the reader's time per image."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data) - 9
    while pos < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF:
            return (int.from_bytes(data[pos + 7 : pos + 9], "big"),
                    int.from_bytes(data[pos + 5 : pos + 7], "big"))
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def train_transform(img_size: int, scale: tuple[float, float] = (0.08, 1.0),
                    rand_augment: tuple[int, int] | None = None):
    """RandomResizedCrop + horizontal flip (+ RandAugment(num_ops, magnitude)), to uint8."""
    crop = RandomResizedCropFlip(img_size, scale)
    if rand_augment is None:
        return _with_decode(crop, img_size)
    # After the crop: RandAugment then works on the small image.
    return _with_decode(v2.Compose([crop, v2.RandAugment(num_ops=rand_augment[0],
                                                          magnitude=rand_augment[1])]), img_size)


def draw_crop(height: int, width: int,
              scale: tuple[float, float] = (0.08, 1.0)) -> tuple[int, int, int, int, int]:
    """(top, left, height, width, flip) of a RandomResizedCrop + horizontal flip of an image of
    this size: timm's parameter draw (torchvision's), then the flip, from Python's `random`,
    which DataLoader seeds per worker. Shared by the loader's crop and the device decode's."""
    # get_params only reads the size: a zero-stride view stands in for the image.
    top, left, h, w = RandomResizedCropAndInterpolation.get_params(
        torch.empty(()).expand(3, height, width), scale, (3 / 4, 4 / 3))
    # A crop of a tiny image can round to nothing.
    return top, left, max(h, 1), max(w, 1), int(random.random() < 0.5)


class RandomResizedCropFlip:
    """torchvision's RandomResizedCrop(antialias) + RandomHorizontalFlip on a uint8 CHW tensor;
    the result is CHW in channels-last memory (HWC), as the decoders give it.

    The same distribution (`draw_crop`) and the same antialiased bilinear resize, without the v2
    transforms' per-call dispatch: that dispatch cost 0.2 ms of 0.8 ms per 224x224 image
    (decode included), measured with tests/benchmarks/loader.py's images.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0)) -> None:
        self.size, self.scale = size, scale

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.apply(image, draw_crop(*image.shape[-2:], self.scale))

    def apply(self, image: torch.Tensor, params: tuple[int, int, int, int, int]) -> torch.Tensor:
        """The crop `draw_crop` drew (top, left, height, width, flip), resized to the size."""
        top, left, h, w, flip = params
        # Decoders give HWC pixels (a permuted CHW view); copying the crop out keeps that
        # layout, and torch's uint8 antialiased resize runs twice as fast on channels-last.
        crop = image[None, :, top : top + h, left : left + w].contiguous(
            memory_format=torch.channels_last)
        out = F.interpolate(crop, size=(self.size, self.size), mode="bilinear",
                            antialias=True, align_corners=False)[0]
        return out.flip(-1) if flip else out


def eval_transform(img_size: int, crop_pct: float = 0.875):
    """Resize the shorter side to img_size/crop_pct, center crop (timm's eval convention)."""
    pipeline = v2.Compose([
        v2.Resize(int(round(img_size / crop_pct)), antialias=True),
        v2.CenterCrop(img_size),
    ])
    return _with_decode(pipeline, img_size)


def _with_decode(pipeline, img_size: int):
    def apply(data: bytes) -> torch.Tensor:
        return pipeline(decode(data, target=img_size))

    return apply
