"""Object detection: boxes and their classes, with a torchvision detector on the backbone.

The model is torchvision's FCOS, RetinaNet or Faster R-CNN on the registered backbone's timm
features through an FPN (`hypernym.train.detector`); samples are the shards' images with their
``json`` annotation (`hypernym.data.box_codec`); the loss is the detector's own (its parts are
logged as ``train/loss_<part>``); validation scores COCO's mAP (`hypernym.train.
detection_metrics`). Detections are not mixed: a recipe with Mixup or CutMix is refused
(`hypernym.config`).
"""

from __future__ import annotations

import torch

from hypernym.data.box_codec import BoxCodec
from hypernym.errors import HypernymError
from hypernym.train.detection_metrics import DetectionMeter
from hypernym.train.tasks.base import Task

__all__ = ["DetectionTask"]


class DetectionTask(Task):
    """Boxes of ``num_classes`` classes (the dataset's), read from the shards' ``json`` members.

    Args:
        num_classes: the dataset's classes (the detector adds its background).
        img_size: the square side every image is resized to.
        codec: the training codec (its evaluation twin comes from `BoxCodec.for_reading`).
    """

    name = "detection"

    def __init__(self, *, num_classes: int, img_size: int, codec: BoxCodec) -> None:
        self.num_outputs, self.img_size, self._codec = num_classes, img_size, codec

    @classmethod
    def from_recipe(cls, recipe, dataset) -> DetectionTask:
        """The detection task of a recipe on its dataset.

        Raises:
            HypernymError: the dataset's training split holds no boxes.
        """
        manifest, spec, data = dataset.manifest, recipe.detection, recipe.data
        boxes = (manifest.stats.get("annotations") or {}).get("splits", {}).get("train", {})
        if not boxes.get("boxes"):
            raise HypernymError(
                f"{recipe.data.path} has no boxes in its training split: task: detection needs "
                "a dataset prepared from an annotated source (VOC, COCO, ImageNet's boxes; "
                "docs/annotations.md)")
        codec = BoxCodec(data.img_size, crop=spec.crop, scale=data.crop_scale, flip=spec.flip,
                         min_box_size=spec.min_box_size)
        return cls(num_classes=len(manifest.classes), img_size=data.img_size, codec=codec)

    def codec(self) -> BoxCodec:
        return self._codec

    def build_model(self, recipe, *, class_ids=(), backbone=None, settings=None):
        from hypernym.train.detector import build_detection_model

        return build_detection_model(recipe, num_classes=self.num_outputs, backbone=backbone,
                                     settings=settings)

    def export_model(self, recipe) -> torch.nn.Module:
        """The plain detector, normalising 0-1 images itself (what is registered)."""
        from hypernym.registry.detector_model import build_detector

        return build_detector(self.card_fields(recipe)["detection"])

    def card_fields(self, recipe) -> dict:
        """The card's ``detection``: the config the registered detector is rebuilt from."""
        from hypernym.train.detector import detector_config

        return {"detection": detector_config(recipe, num_classes=self.num_outputs,
                                             for_training=False)}

    def target_to(self, target: list[dict], device: torch.device) -> list[dict]:
        return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in target]

    def loss(self, model, images, target) -> dict[str, torch.Tensor]:
        # torchvision's detectors take a list of images (they may differ in size) and return
        # their named losses in training mode; Faster R-CNN's names carry a loss_ prefix.
        losses = model(list(images), target)
        return {name.removeprefix("loss_"): value for name, value in losses.items()}

    def predict(self, model, images) -> list[dict]:
        return model(list(images))

    def meter(self, device: torch.device) -> DetectionMeter:
        return DetectionMeter(self.img_size)
