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


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"exif": b"Exif\0\0" + b"x" * 300},
                                     {"quality": 30, "subsampling": 0}])
def test_jpeg_size_reads_the_frame_header_as_pil_does(options):
    from hypernym.data.transforms import jpeg_size

    image = Image.fromarray(np.zeros((37, 53, 3), np.uint8))
    for mode in ("RGB", "L"):
        out = io.BytesIO()
        image.convert(mode).save(out, format="JPEG", **options)
        assert jpeg_size(out.getvalue()) == (53, 37) == Image.open(out).size
    assert jpeg_size(encode("RGB", fmt="PNG")) is None
    assert jpeg_size(b"\xff\xd8garbage") is None
    assert jpeg_size(b"") is None


def test_crop_flip_matches_torchvision_for_the_same_draw():
    """The lean RandomResizedCrop + flip is torchvision's: same parameters for the same seed,
    same antialiased resize, pixel for pixel."""
    import random

    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms.v2 import functional as TF

    from hypernym.data.transforms import RandomResizedCropFlip

    image = torch.from_numpy(np.random.default_rng(1).integers(0, 255, (3, 90, 130),
                                                               dtype=np.uint8))
    crop, flips = RandomResizedCropFlip(48, scale=(0.08, 1.0)), 0
    for seed in range(40):
        random.seed(seed)
        out = crop(image)
        random.seed(seed)
        top, left, h, w = RandomResizedCropAndInterpolation.get_params(image, (0.08, 1.0),
                                                                       (3 / 4, 4 / 3))
        expected = TF.resized_crop(image, top, left, h, w, [48, 48], antialias=True)
        flipped = random.random() < 0.5
        flips += flipped
        assert torch.equal(out, expected.flip(-1) if flipped else expected)
        assert out.dtype == torch.uint8 and out.shape == (3, 48, 48)
    assert 10 <= flips <= 30
    tiny = torch.zeros((3, 1, 1), dtype=torch.uint8)  # a crop can't round to nothing
    assert crop(tiny).shape == (3, 48, 48)
