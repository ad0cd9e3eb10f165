"""Write-side image processing and read-side transforms, on real encoded images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hypernym.data.images import BadImage, process_image
from hypernym.data.transforms import eval_transform, train_transform


def encode(mode: str, size=(120, 80), fmt="JPEG") -> bytes:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    image = rgb.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"),
                                      ("P", "PNG"), ("RGBA", "PNG")])
def test_every_mode_becomes_rgb_jpeg(mode, fmt):
    out = Image.open(io.BytesIO(process_image(encode(mode, fmt=fmt), size=32, resize="squish",
                                              quality=90)))
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == (32, 32)


def test_resize_rules():
    data = encode("RGB", size=(120, 80))
    shorter = Image.open(io.BytesIO(process_image(data, size=40, resize="shorter", quality=90)))
    assert shorter.size == (60, 40)
    never_up = Image.open(io.BytesIO(process_image(data, size=200, resize="shorter", quality=90)))
    assert never_up.size == (120, 80)
    kept = Image.open(io.BytesIO(process_image(data, size=10, resize="none", quality=90)))
    assert kept.size == (120, 80)


@pytest.mark.parametrize("data,reason", [(b"", "empty_file"), (b"not an image", "corrupt_image")])
def test_bad_bytes_are_named(data, reason):
    with pytest.raises(BadImage) as err:
        process_image(data, size=32, resize="squish", quality=90)
    assert err.value.reason == reason


def test_truncated_jpeg_is_corrupt():
    data = encode("RGB", size=(200, 200))
    with pytest.raises(BadImage, match="corrupt_image"):
        process_image(data[: len(data) // 2], size=32, resize="squish", quality=90)


def test_transforms_give_uint8_chw():
    data = encode("RGB", size=(300, 200))
    for transform in (train_transform(64), eval_transform(64)):
        out = transform(data)
        assert out.dtype == torch.uint8 and out.shape == (3, 64, 64)


def test_decode_scales_in_the_dct_domain_only_when_the_target_allows():
    from hypernym.data.transforms import decode

    big = encode("RGB", size=(640, 480))
    assert decode(big, target=64).shape == (3, 240, 320)  # 1/2 scale: still >= 2x target
    assert decode(big, target=224).shape == (3, 480, 640)  # full size, libjpeg-turbo path
    png = encode("RGB", size=(50, 40), fmt="PNG")
    assert decode(png, target=32).shape == (3, 40, 50)
    gray = encode("L", size=(50, 40))
    assert decode(gray, target=32).shape == (3, 40, 50)  # greyscale JPEG comes out RGB


def test_truncated_jpeg_on_either_decode_path_is_a_skippable_error():
    """libjpeg-turbo raises RuntimeError on truncated data: the reader only skips OSError and
    ValueError, so decode must turn it into one of those (it did not, and a truncated JPEG
    crashed training)."""
    from hypernym.data.transforms import decode

    data = encode("RGB", size=(200, 200))
    for target in (224, 32):  # turbo path (image < 4x target), PIL draft path (>= 4x)
        with pytest.raises((OSError, ValueError)):
            decode(data[: len(data) // 3], target=target)
