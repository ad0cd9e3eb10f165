"""Replaying a teacher store in the loader: the sample codec of offline distillation.

For a training sample the codec picks one of the stored views (`choose_view`: seed, epoch and
the sample's key, nothing else), cuts that view's crop out of the image and flips it as the
teacher saw it, and hands the view's stored soft label on as the target with the class index.
Validation samples go through the reader's evaluation transform, with the teacher's stored
prediction for the evaluation crop (for the teacher-student agreement). The sidecar of a shard
is read once per loader process while its samples pass through the shuffle buffer, and its sha256
is checked against the store's manifest.

The target of a batch is a `StoreTarget`; the task (`hypernym.train.tasks.distill`) turns it
into full distributions on the training device (`densify`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from hypernym.data.codec import RawSample
from hypernym.data.device_decode import CropPlan, Encoded
from hypernym.data.storage import join, open_fs, unreachable_errors
from hypernym.data.transforms import decode, jpeg_size
from hypernym.errors import HypernymError
from hypernym.train.distill.store_format import Sidecar, StoreManifest, decode_sidecar
from hypernym.train.distill.views import apply_view, choose_view, pixel_box

__all__ = ["StoreCodec", "StoreTarget", "densify"]

# Sidecars kept per loader process, in samples, as a multiple of the shuffle buffer. The reader's
# buffer swaps a random entry for each sample read, so a sample stays for a geometric number of
# reads (mean: the buffer's size) and the buffer holds samples of many more shards than its size
# suggests: 4 shards of 256 samples under a 512-sample buffer missed 18% of lookups (each a read,
# a sha256 and a decode of the sidecar). Keeping the shards of the last 8 buffers' worth of
# samples misses a lookup with probability e^-8 (0.03%), for a few MB (N=50 views: 10 MB).
_KEEP_BUFFERS = 8
_TRIES = 4


class StoreTarget(NamedTuple):
    """A batch's targets from a teacher store.

    Attributes:
        labels: int64 [B] class indices.
        cls: int64 [B, S] the class index of each stored probability.
        prob: fp16 [B, S] the teacher's top-K probabilities (per level, concatenated).
        rest: fp16 [B, L] each level's probability outside its top-K.
        conf: fp16 [B, L] the teacher's confidence per level (semantic stores; [B, 0] else).
        top1: int64 [B] the teacher's top-1 class over all its logits, stored for the
            evaluation crops (-1 for training views).
    """

    labels: torch.Tensor
    cls: torch.Tensor
    prob: torch.Tensor
    rest: torch.Tensor
    conf: torch.Tensor
    top1: torch.Tensor


class StoreCodec:
    """``jpg`` and ``cls`` with the stored teacher views of a store (picklable; sidecars are
    loaded in the loader processes).

    Args:
        store: the store's directory (path or ``s3://``).
        manifest: its manifest.
        seed: the run's ``data.seed`` (with the epoch and key, it picks the view).
        img_size: the student's input side.
        shuffle_buffer: the run's ``data.shuffle_buffer`` (how many sidecars to keep).
    """

    members = ("jpg", "cls")
    packs_ints = False

    def __init__(self, *, store: str, manifest: StoreManifest, seed: int, img_size: int,
                 shuffle_buffer: int = 512) -> None:
        self.store, self.seed, self.size = store, seed, img_size
        self.views = manifest.views
        self.sidecars = {info.shard: (info.name, info.sha256, info.samples)
                         for infos in manifest.sidecars.values() for info in infos}
        self.keep_samples = _KEEP_BUFFERS * shuffle_buffer
        self._cache: OrderedDict[str, Sidecar] = OrderedDict()
        self._cached_samples = 0

    def __getstate__(self) -> dict[str, Any]:
        # loaded sidecars stay where they are
        return {**self.__dict__, "_cache": OrderedDict(), "_cached_samples": 0}

    def __call__(self, raw: RawSample, transform: Callable[[bytes], Any]):
        sidecar = self._sidecar(raw.shard.rstrip("/").rsplit("/", 1)[-1])
        row, arrays = sidecar.row(raw.key), sidecar.arrays
        jpg = raw.fields["jpg"]
        if "box" in arrays:  # a training shard: one of the sample's views
            view = choose_view(self.seed, raw.epoch, raw.key, self.views)
            image = self._view(jpg, arrays["box"][row, view], bool(arrays["flip"][row, view]),
                               transform)
        else:  # the evaluation crop, as the reader makes it
            view, image = 0, transform(jpg)
        conf = arrays["conf"][row, view] if "conf" in arrays else None
        top1 = int(arrays["top1"][row, view]) if "top1" in arrays else -1
        return image, (int(raw.fields["cls"]), arrays["cls"][row, view],
                       arrays["prob"][row, view], arrays["rest"][row, view], conf, top1)

    def collate(self, targets: list) -> StoreTarget:
        labels, cls, prob, rest, conf, top1 = zip(*targets, strict=True)
        conf_batch = (torch.from_numpy(np.stack(conf)) if conf[0] is not None
                      else torch.zeros((len(labels), 0), dtype=torch.float16))
        return StoreTarget(torch.tensor(labels, dtype=torch.int64),
                           torch.from_numpy(np.stack(cls).astype(np.int64)),
                           torch.from_numpy(np.stack(prob)), torch.from_numpy(np.stack(rest)),
                           conf_batch, torch.tensor(top1, dtype=torch.int64))

    def _view(self, jpg: bytes, box, flip: bool, transform) -> Any:
        if isinstance(transform, CropPlan):  # device decode: the box in full-size pixels
            size = jpeg_size(jpg)
            if size is None:
                raise ValueError("not a JPEG (device decode takes JPEG only)")
            top, left, h, w = pixel_box(box, size[1], size[0])
            return Encoded(torch.frombuffer(bytearray(jpg), dtype=torch.uint8),
                           (top, left, h, w, int(flip)))
        return apply_view(decode(jpg, target=self.size), box, flip, self.size)

    def _sidecar(self, shard: str) -> Sidecar:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        try:
            name, sha256, samples = self.sidecars[shard]
        except KeyError:
            raise HypernymError(f"the teacher store {self.store} has no sidecar for shard "
                                f"{shard}: it belongs to another dataset") from None
        data = _read(join(self.store, name))
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HypernymError(f"{join(self.store, name)} is not the sidecar the store's "
                                "manifest recorded (sha256 differs): write the store again")
        sidecar = decode_sidecar(data)
        self._cache[shard], self._cached_samples = sidecar, self._cached_samples + samples
        while self._cached_samples > self.keep_samples and len(self._cache) > 1:
            evicted, _ = self._cache.popitem(last=False)
            self._cached_samples -= self.sidecars[evicted][2]
        return sidecar


def _read(uri: str) -> bytes:
    """A sidecar's bytes; an endpoint that drops out is retried a few times (1, 2, 4 s)."""
    fs, path = open_fs(uri)
    for attempt in range(_TRIES):
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise HypernymError(f"{uri} is missing: the teacher store is incomplete; write it "
                                "again") from None
        except (OSError, *unreachable_errors()):
            if attempt == _TRIES - 1:
                raise
            time.sleep(2 ** attempt)
    raise AssertionError("unreachable")


def densify(target: StoreTarget, level_of: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """(B x C) float32 teacher distributions from stored top-K: each level's top-K
    probabilities where the teacher put them, and the level's rest spread evenly over its other
    classes (ml-dr's "smooth" densify); 0 in columns of no level.

    Args:
        level_of: per class column, its level (-1: none), on the device.
        tail: per class column, how many classes share its level's rest.
    """
    rest = target.rest.float().clamp(min=0)  # fp16 rounding can leave a hair below 0
    dense = rest[:, level_of.clamp(min=0)] / tail
    dense = torch.where(level_of >= 0, dense, torch.zeros_like(dense))
    return dense.scatter_(1, target.cls, target.prob.float())
