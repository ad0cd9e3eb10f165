"""What a sample's tar members become: the codec a task hands the reader.

The reader (`hypernym.data.reader`) reads shards, schedules samples and counts the bad ones; what
a sample *means* depends on the task. A codec names the tar members a sample must have, turns
them into an image and a target inside the loader workers, and collates the targets of a batch.
It is a small picklable object (it travels to every loader process), separate from the task,
which may hold models.

Single-label classification is the default (`LabelCodec`): the image through the reader's
transform and the ``cls`` member as the class index. Its targets are plain ints, which the
collate packs into one tensor with the sample ids (`hypernym.data.collate`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch

__all__ = ["LabelCodec", "RawSample", "SampleCodec"]


class RawSample(NamedTuple):
    """One sample as read from its shard, before decoding.

    Attributes:
        key: the sample's key in the tar (the member names before the first dot).
        fields: the members the codec asked for, by extension (``jpg``, ``cls``, ``json``...).
        id: the sample's id in the split (`hypernym.data.schedule`).
        epoch: the epoch being read (for codecs whose augmentation is a function of it).
        shard: the URL of the shard it came from.
    """

    key: str
    fields: dict[str, bytes]
    id: int
    epoch: int
    shard: str


class SampleCodec(Protocol):
    """A task's sample codec.

    Attributes:
        members: the tar members (extensions) a sample must have; samples without them are
            not read. The image member comes first.
        packs_ints: whether the targets are plain ints (packed with the sample ids).
    """

    members: tuple[str, ...]
    packs_ints: bool

    def __call__(self, raw: RawSample, transform: Callable[[bytes], Any]) -> tuple[Any, Any]:
        """(image, target) of one sample; ``transform`` is the reader's image transform (JPEG
        bytes to a uint8 tensor, or to an encoded crop for device decode). Raise ValueError
        (or OSError) for a sample that cannot be used: the reader skips and counts it."""

    def collate(self, targets: list) -> Any:
        """A batch's targets (not called when ``packs_ints``)."""

    # Optional: ``for_reading(*, train: bool) -> SampleCodec``, the codec for a training or an
    # evaluation pass, for codecs that transform images themselves (`hypernym.data.box_codec`).


class LabelCodec:
    """Single-label samples: ``jpg`` through the reader's transform, ``cls`` as the target."""

    members = ("jpg", "cls")
    packs_ints = True

    def __call__(self, raw: RawSample, transform: Callable[[bytes], Any]) -> tuple[Any, int]:
        return transform(raw.fields["jpg"]), int(raw.fields["cls"])

    def collate(self, targets: list) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.int64)
