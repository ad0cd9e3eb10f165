"""The sample codec of multi-label training: an image and its multi-hot target.

A sample's labels come from its ``json`` member (`hypernym.data.annotations`). A training crop
can cut an object out of the picture; a label whose every box is (mostly) outside the crop would
then teach the model to see what is not there. The codec therefore draws the crop itself (the
reader's RandomResizedCrop and flip, `hypernym.data.transforms`), measures how much of each box
stays inside it, and drops a label whose boxes all keep less than ``min_visible`` of their area.
Labels without boxes (a table of labels, a VOC object without a box) always stay.

Evaluation resizes the whole image to the input size (timm's ``squash`` crop mode), so no object
at the border is cut away: the model card records that preprocessing, and the served model
applies the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from hypernym.data.annotations import Annotation, multi_hot, parse_annotation
from hypernym.data.codec import RawSample
from hypernym.data.transforms import RandomResizedCropFlip, decode, draw_crop

__all__ = ["MultiLabelCodec", "visible_fraction"]


def visible_fraction(boxes: torch.Tensor, window: tuple[float, float, float, float]
                     ) -> torch.Tensor:
    """float [N]: the share of each box's area (x0 y0 x1 y1) inside ``window`` (x0 y0 x1 y1);
    a box without area counts as visible when its point or line lies in the window."""
    x0, y0, x1, y1 = window
    w = (boxes[:, 2].clamp(max=x1) - boxes[:, 0].clamp(min=x0)).clamp(min=0)
    h = (boxes[:, 3].clamp(max=y1) - boxes[:, 1].clamp(min=y0)).clamp(min=0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (boxes[:, 0] >= x0) & (boxes[:, 2] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)
    return torch.where(area > 0, w * h / area.clamp(min=1e-12), inside.float())


class MultiLabelCodec:
    """``jpg`` + ``json`` -> (uint8 [3, S, S] image, float32 [num_classes] multi-hot target).

    Args:
        num_classes: the target's width (the dataset's classes).
        img_size: S.
        train: training crops (RandomResizedCrop at ``crop_scale``, flip, RandAugment) or the
            evaluation resize of the whole image.
        min_visible: training: the least share of a box's area that keeps its label.
    """

    members = ("jpg", "json")
    packs_ints = False

    def __init__(self, num_classes: int, *, img_size: int, train: bool,
                 crop_scale: tuple[float, float] = (0.08, 1.0),
                 rand_augment: tuple[int, int] | None = None, min_visible: float = 0.5) -> None:
        self.num_classes, self.img_size, self.train = num_classes, img_size, train
        self.crop_scale, self.min_visible = tuple(crop_scale), min_visible
        self.resize = RandomResizedCropFlip(img_size, self.crop_scale)
        self.augment = (v2.RandAugment(num_ops=rand_augment[0], magnitude=rand_augment[1])
                        if train and rand_augment else None)

    def __call__(self, raw: RawSample, transform: Callable[[bytes], Any]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raises ValueError for a sample whose image or annotation cannot be read (the
        reader skips and counts it). ``transform`` (the reader's) is not used: the crop must
        be known to follow the boxes."""
        annotation = parse_annotation(raw.fields["json"])
        classes = annotation.labels + annotation.box_classes.tolist()
        if any(not 0 <= c < self.num_classes for c in classes):
            raise ValueError(f"classes {sorted(set(classes))} outside the dataset's "
                             f"{self.num_classes}")
        image = decode(raw.fields["jpg"], target=self.img_size)
        height, width = image.shape[-2:]
        if not self.train:
            return self.resize.apply(image, (0, 0, height, width, 0)), \
                multi_hot(annotation.labels, self.num_classes)
        crop = draw_crop(height, width, self.crop_scale)
        out = self.resize.apply(image, crop)
        if self.augment is not None:
            out = self.augment(out)
        return out, self.target(annotation, crop, (width, height))

    def collate(self, targets: list[torch.Tensor]) -> torch.Tensor:
        """float32 [B, num_classes]."""
        return torch.stack(targets)

    def target(self, annotation: Annotation, crop: tuple[int, int, int, int, int],
               decoded: tuple[int, int]) -> torch.Tensor:
        """The multi-hot target of a training crop (top, left, height, width, flip) of the
        image decoded at ``decoded`` (width, height): labels whose boxes it cut away left out."""
        target = multi_hot(annotation.labels, self.num_classes)
        if not len(annotation.boxes) or self.min_visible <= 0:
            return target
        # Boxes are in the stored image's pixels; a large JPEG may decode at a reduced scale.
        stored = annotation.size or decoded
        scale = torch.tensor([decoded[0] / stored[0], decoded[1] / stored[1]] * 2)
        top, left, h, w, _ = crop
        seen = visible_fraction(annotation.boxes * scale, (left, top, left + w, top + h))
        boxed = torch.zeros(self.num_classes, dtype=torch.bool)
        kept = torch.zeros(self.num_classes, dtype=torch.bool)
        classes = annotation.box_classes
        boxed[classes] = True
        kept[classes[seen >= self.min_visible]] = True
        return target * (~boxed | kept).float()
