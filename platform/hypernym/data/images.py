"""Write-side image processing for preparation: decode, fix the mode, resize, re-encode JPEG."""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

__all__ = ["BadImage", "Geometry", "process_image", "process_image_geometry"]


class BadImage(Exception):
    """A sample that cannot be used; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Geometry(NamedTuple):
    """How `process_image` mapped the source image onto the stored one.

    A point (x, y) of the source image, in continuous pixel coordinates (0 at the left edge of
    the first pixel), is at (x * scale_x, y * scale_y) in the stored image.
    """

    width: int  # of the source image
    height: int
    out_width: int  # of the stored image
    out_height: int
    scale_x: float
    scale_y: float


def process_image(data: bytes, *, size: int, resize: str, quality: int) -> bytes:
    """Return JPEG bytes of the image, RGB, resized per the recipe.

    ``squish`` resizes to size x size (the 21K-P default), ``shorter`` scales the shorter side to
    ``size`` and never upscales, ``none`` keeps the size. Everything is re-encoded so that every
    shard member is a baseline RGB JPEG (CMYK, greyscale, palette and PNG-in-JPEG included).
    """
    return process_image_geometry(data, size=size, resize=resize, quality=quality)[0]


def process_image_geometry(data: bytes, *, size: int, resize: str,
                           quality: int) -> tuple[bytes, Geometry]:
    """`process_image`, and the `Geometry` that maps the source's pixels to the stored image's
    (for boxes, which must follow the image exactly)."""
    if not data:
        raise BadImage("empty_file")
    draft_scale = 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if resize != "none" and image.format == "JPEG":
                # DCT-domain downscale: decode at >= 2x the target instead of full size.
                drafted = image.draft("RGB", (size * 2, size * 2))
                if drafted is not None:  # box: the source's extent in the drafted pixels
                    draft_scale = drafted[1][2] / width
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning):
        raise BadImage("corrupt_image") from None
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK, L, P, RGBA, I;16 ... (alpha is dropped)
    decoded = image.size  # the drafted size: 1/2 to 1/8 of the source, rounded up
    if resize == "squish":
        image = image.resize((size, size), Image.BICUBIC)
    elif resize == "shorter":
        scale = size / min(image.size)
        if scale < 1:
            w, h = (max(1, round(d * scale)) for d in image.size)
            image = image.resize((w, h), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    # A source pixel x is at x * draft_scale in the drafted image, whose [0, decoded] span the
    # resize maps onto [0, stored] (PIL's resize maps pixel edges to pixel edges).
    geometry = Geometry(width, height, image.size[0], image.size[1],
                        draft_scale * image.size[0] / decoded[0],
                        draft_scale * image.size[1] / decoded[1])
    return out.getvalue(), geometry
