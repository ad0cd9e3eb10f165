"""COCO's detection figures, computed by torchmetrics' `MeanAveragePrecision` on pycocotools.

mAP@[.5:.95] (``map``), mAP@.5 (``map_50``), mAP@.75, mAP by object size (``map_small``,
``map_medium``, ``map_large``: boxes under 32², under 96², and above, in the dataset's stored
pixels) and average recall at 1, 10 and 100 detections per image, as pycocotools' ``COCOeval``
reports them; -1 where the split has no object of that kind. Per-class AP on request.

`DetectionMeter` is the validation meter of ``task: detection``: each rank keeps its images'
detections and boxes, and `compute` gathers every rank's before scoring (COCO's AP is not a sum
of per-batch parts), so every rank reports the same figures.
"""

from __future__ import annotations

from typing import Any

import torch

from hypernym.train.distributed import all_gather

__all__ = ["SCALARS", "DetectionMeter", "ground_truth", "in_stored_pixels", "map_metric",
           "score"]

# torchmetrics' result keys that are one number each (the others are per class).
SCALARS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1",
           "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def map_metric(*, class_metrics: bool = False):
    """torchmetrics' COCO mAP on boxes (x0 y0 x1 y1), with pycocotools computing it."""
    import numpy as np
    from torchmetrics.detection import MeanAveragePrecision

    # COCOeval's own IoU and recall thresholds (float64): torchmetrics' defaults are float32
    # linspaces, which move mAP by up to 1e-3 on a small split, so pycocotools reading the
    # COCO results file would not give the report's figures.
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                class_metrics=class_metrics,
                                iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
                                rec_thresholds=np.linspace(0.0, 1.0, 101).tolist())


def in_stored_pixels(prediction: dict[str, torch.Tensor], size: torch.Tensor,
                     img_size: int) -> dict[str, torch.Tensor]:
    """A detection of an ``img_size`` square (the evaluated input) in the pixels of the stored
    image of ``size`` ([height, width]), on the CPU."""
    height, width = (int(v) for v in size)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32) / img_size
    return {"boxes": prediction["boxes"].detach().float().cpu() * scale,
            "scores": prediction["scores"].detach().float().cpu(),
            "labels": prediction["labels"].detach().cpu()}


def ground_truth(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An evaluation target (`hypernym.data.box_codec`) as the metric reads it, on the CPU."""
    return {"boxes": target["boxes"].float().cpu(), "labels": target["labels"].cpu(),
            "iscrowd": target["iscrowd"].cpu()}


def score(predictions: list[dict], targets: list[dict], *,
          class_metrics: bool = False) -> tuple[dict[str, float], Any]:
    """(COCO's scalar figures, the metric with every image in it) of one split's detections
    and boxes (per-class AP in the metric's result with ``class_metrics``)."""
    metric = map_metric(class_metrics=class_metrics)
    if predictions:
        metric.update(predictions, targets)
    result = metric.compute()
    return {name: float(result[name]) for name in SCALARS}, (metric, result)


class DetectionMeter:
    """A validation pass's COCO figures (`SCALARS`) over every rank's images.

    Args:
        img_size: the side of the square inputs the predictions refer to.
    """

    def __init__(self, img_size: int) -> None:
        self.img_size = img_size
        self.predictions: list[dict] = []
        self.targets: list[dict] = []

    def update(self, outputs: list[dict], target: list[dict]) -> None:
        for prediction, truth in zip(outputs, target, strict=True):
            self.predictions.append(in_stored_pixels(prediction, truth["size"], self.img_size))
            self.targets.append(ground_truth(truth))

    def compute(self) -> dict[str, float]:
        predictions = [p for part in all_gather(self.predictions) for p in part]
        targets = [t for part in all_gather(self.targets) for t in part]
        figures, _ = score(predictions, targets)
        return figures
