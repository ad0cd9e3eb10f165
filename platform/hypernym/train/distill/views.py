"""The augmentation views of a teacher store: drawn once when the store is written, replayed
when a student trains from it.

A view is a RandomResizedCrop box and a horizontal flip. Boxes are kept as fractions of the
image (top, left, height, width in [0, 1], FKD's convention), so a replay may decode the JPEG at
another resolution than the store did (PIL's reduced-size decode of large images) and still cut
the same region.

Which stored view a sample gets in an epoch is `choose_view`: a pure function of (seed, epoch,
sample key). No state is kept, so a run resumed mid-epoch, on another number of workers or
loader processes, gives every sample the view an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import random

import torch
import torch.nn.functional as F

from hypernym.data.transforms import draw_crop

__all__ = ["BOX_SCALE", "apply_view", "choose_view", "draw_views", "pixel_box"]

BOX_SCALE = 65535  # boxes are stored as uint16 fractions: 1/65535 of a side


def choose_view(seed: int, epoch: int, key: str, views: int) -> int:
    """The stored view (0 .. views-1) that sample ``key`` trains on in ``epoch``."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % views


def draw_views(key: str, height: int, width: int, *, views: int, seed: int,
               scale: tuple[float, float]) -> list[tuple[int, int, int, int, int]]:
    """``views`` (top, left, height, width, flip) boxes as uint16 fractions (`BOX_SCALE`) for
    an image of this size: the training crop's own draw (`hypernym.data.transforms.draw_crop`,
    timm's RandomResizedCrop parameters), seeded by (seed, key) so that a store written again
    holds the same views."""
    state = random.getstate()  # draw_crop draws from Python's global generator
    random.seed(f"views/{seed}/{key}")
    try:
        boxes = [draw_crop(height, width, scale) for _ in range(views)]
    finally:
        random.setstate(state)
    return [(round(t * BOX_SCALE / height), round(left * BOX_SCALE / width),
             round(h * BOX_SCALE / height), round(w * BOX_SCALE / width), flip)
            for t, left, h, w, flip in boxes]


def pixel_box(box, height: int, width: int) -> tuple[int, int, int, int]:
    """A stored box (uint16 fractions) in pixels of an image of this size (at least 1x1,
    inside the image)."""
    top, left, h, w = (int(v) for v in box[:4])
    h = max(round(h * height / BOX_SCALE), 1)
    w = max(round(w * width / BOX_SCALE), 1)
    top = min(round(top * height / BOX_SCALE), height - h)
    left = min(round(left * width / BOX_SCALE), width - w)
    return top, left, h, w


def apply_view(image: torch.Tensor, box, flip: bool, size: int) -> torch.Tensor:
    """Cut a stored view out of a uint8 CHW image: crop, antialiased bilinear resize to
    ``size`` x ``size``, flip; uint8 CHW in channels-last memory, like the loader's own crop
    (`hypernym.data.transforms.RandomResizedCropFlip`)."""
    top, left, h, w = pixel_box(box, image.shape[-2], image.shape[-1])
    crop = image[None, :, top:top + h, left:left + w].contiguous(
        memory_format=torch.channels_last)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)[0]
    return out.flip(-1) if flip else out
