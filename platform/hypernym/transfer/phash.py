"""Image hashes for the contamination check: an exact hash of the bytes, and DCT perceptual
hashes that survive resizing, re-encoding and small crops.

Exact: blake2b (64 bits) of the encoded bytes, not of decoded pixels. Prepared shards store
encoded JPEGs, and the same source image prepared with the same recipe gives the same bytes (the
encoder is deterministic). Hashing bytes lets the perceptual hash decode at reduced scale (JPEG
draft mode, luma only), several times cheaper than the full RGB decode a pixel hash needs.
Anything that is not byte-identical (re-encoded, metadata stripped, resized) is a near
duplicate at a small distance.

Near: a 256-bit DCT hash (pHash, as in Zauner 2010 and the ``imagehash`` package's ``phash``,
at 16 x 16 coefficients instead of 8 x 8). The image becomes a 64 x 64 grey grid; the 16 x 16
lowest 2-D DCT frequencies are compared with their median. Resizing and re-encoding move few
bits. A crop moves the content, so each image also gets the hashes of 9 crops keeping 95% of
each side (offsets 0, 2.5 and 5% on each axis): a copy cropped by up to 5% lies within 1.25% of
one of them. Written here rather than taken from ``imagehash``: its ``phash`` is the same ten
lines (one image at a time, scipy's DCT), without the crop hypotheses or batched Hamming
distances, and it would add PyWavelets as a dependency. The DCT is an exact 64 x 64 matrix, and
grid resampling and DCT fold into one small matrix per crop.

Bits are ordered from low to high frequency, so the first 64-bit word is a coarse hash that
prefilters pairs cheaply.
"""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
from PIL import Image

__all__ = ["GRID", "HYPOTHESES", "WORDS", "exact_hash", "hamming", "perceptual_hashes"]

GRID = 64  # grey grid side
FREQS = 16  # DCT frequencies kept per axis: 256 bits
WORDS = FREQS * FREQS // 64  # uint64 words per hash
CROP_KEEP = 0.95
_OFFSETS = (0.0, 0.5, 1.0)  # of the 5% margin, per axis
HYPOTHESES = 1 + len(_OFFSETS) ** 2  # full image, then the 3 x 3 crops


def exact_hash(data: bytes) -> np.uint64:
    """64-bit blake2b of the encoded bytes (collision chance over 11 M images: ~3e-6)."""
    return np.frombuffer(hashlib.blake2b(data, digest_size=8).digest(), dtype=np.uint64)[0]


@functools.cache
def _operators() -> tuple[np.ndarray, np.ndarray]:
    """(axis operators (4, FREQS, GRID): full, then crops at each offset; bit order)."""
    k, x = np.arange(GRID)[:, None], np.arange(GRID)[None, :]
    dct = np.sqrt(np.where(k == 0, 1.0, 2.0) / GRID) * np.cos(np.pi * (2 * x + 1) * k / (2 * GRID))
    ops = [dct[:FREQS]]
    for offset in _OFFSETS:
        start = (1 - CROP_KEEP) * offset * GRID
        # linear resampling of [start, start + 0.95 * GRID) onto GRID samples
        pos = start + (np.arange(GRID) + 0.5) * CROP_KEEP - 0.5
        lo = np.clip(np.floor(pos).astype(int), 0, GRID - 1)
        hi = np.clip(lo + 1, 0, GRID - 1)
        frac = pos - np.floor(pos)
        resample = np.zeros((GRID, GRID))
        np.add.at(resample, (np.arange(GRID), lo), 1 - frac)
        np.add.at(resample, (np.arange(GRID), hi), frac)
        ops.append(dct[:FREQS] @ resample)
    u, v = np.meshgrid(np.arange(FREQS), np.arange(FREQS), indexing="ij")
    order = np.lexsort((u.ravel(), (u + v).ravel()))  # low frequencies first
    return np.stack(ops).astype(np.float32), order


def grey_grid(data: bytes) -> np.ndarray:
    """The image as a GRID x GRID float32 grey grid (area average); JPEGs decode at reduced
    scale, luma only."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("L", (GRID * 2, GRID * 2))
        grey = image.convert("L").resize((GRID, GRID), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float32)


def perceptual_hashes(grids: np.ndarray) -> np.ndarray:
    """(n, GRID, GRID) grey grids -> (n, HYPOTHESES, WORDS) uint64 hashes: the full image's,
    then the 9 crops'."""
    ops, order = _operators()
    rows = np.einsum("aky,nyx->nakx", ops, grids.astype(np.float32))
    pairs = [(0, 0)] + [(a, b) for a in range(1, 4) for b in range(1, 4)]
    coeffs = np.stack([rows[:, a] @ ops[b].T for a, b in pairs], axis=1)  # n, H, F, F
    flat = coeffs.reshape(len(grids), HYPOTHESES, -1)[..., order]
    median = np.median(flat[..., 1:], axis=-1, keepdims=True)  # the DC term is left out
    bits = np.packbits(flat > median, axis=-1)  # n, H, 32 bytes
    return np.ascontiguousarray(bits).view(">u8").astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of (m, WORDS) and (n, WORDS) hashes: (m, n) int."""
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=-1, dtype=np.int32)
