"""The last data stage, on the training device: uint8 (or still encoded) batch -> normalised float.

It runs in the training process, not the loader: normalising there keeps the loader's batches
uint8 (a quarter of float32's bytes through shared memory), and a batch the loader left encoded
(``data.decode_on: device``) is decoded here, on the GPU when there is one
(`hypernym.data.device_decode`).
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from hypernym.data.device_decode import EncodedBatch, decode_batch

__all__ = ["normalizer"]


def normalizer(device: torch.device, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, *,
               img_size: int | None = None):
    """uint8 NCHW batch -> normalised float on the device (done there, not in the loader).
    ``mean`` and ``std`` are per channel, for pixels scaled to 0-1. A batch still encoded
    (``data.decode_on: device``) is decoded there first, at ``img_size``."""
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def normalize(images) -> torch.Tensor:
        if isinstance(images, EncodedBatch):
            images = decode_batch(images, size=img_size, device=device)
        return (images.to(device, non_blocking=True).float() - mean) / std

    return normalize
