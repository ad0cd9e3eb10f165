"""Write-side image processing for preparation: decode, fix the mode, resize, re-encode JPEG."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

__all__ = ["BadImage", "process_image"]


class BadImage(Exception):
    """A sample that cannot be used; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def process_image(data: bytes, *, size: int, resize: str, quality: int) -> bytes:
    """Return JPEG bytes of the image, RGB, resized per the recipe.

    ``squish`` resizes to size x size (the 21K-P default), ``shorter`` scales the shorter side to
    ``size`` and never upscales, ``none`` keeps the size. Everything is re-encoded so that every
    shard member is a baseline RGB JPEG (CMYK, greyscale, palette and PNG-in-JPEG included).
    """
    if not data:
        raise BadImage("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if resize != "none" and image.format == "JPEG":
                # DCT-domain downscale: decode at >= 2x the target instead of full size.
                image.draft("RGB", (size * 2, size * 2))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning):
        raise BadImage("corrupt_image") from None
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK, L, P, RGBA, I;16 ... (alpha is dropped)
    if resize == "squish":
        image = image.resize((size, size), Image.BICUBIC)
    elif resize == "shorter":
        scale = size / min(image.size)
        if scale < 1:
            w, h = (max(1, round(d * scale)) for d in image.size)
            image = image.resize((w, h), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
