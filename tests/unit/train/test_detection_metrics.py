"""COCO's detection figures through torchmetrics on pycocotools: perfect detections score 1,
detections are judged in the stored image's pixels, and the figures are pycocotools' own on the
same boxes."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from hypernym.train.detection_metrics import DetectionMeter, in_stored_pixels, score


def target(boxes, labels, size=(100, 200)):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels), "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
            "size": torch.tensor(size)}


def test_perfect_detections_in_stored_pixels_score_one():
    # a 200 x 100 stored image evaluated as a 50 x 50 square: x scales by 4, y by 2
    truth = target([[20, 10, 100, 60], [120, 40, 180, 90]], [1, 2])
    detected = {"boxes": torch.tensor([[5.0, 5, 25, 30], [30, 20, 45, 45]]),
                "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}
    assert in_stored_pixels(detected, truth["size"], 50)["boxes"].tolist() == \
        truth["boxes"].tolist()
    meter = DetectionMeter(50)
    meter.update([detected], [truth])
    figures = meter.compute()
    assert figures["map"] == pytest.approx(1.0) and figures["map_50"] == pytest.approx(1.0)
    assert figures["map_small"] == -1  # no object under 32 x 32 pixels in the stored image


def test_the_figures_are_pycocotools_own():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gen = torch.Generator().manual_seed(0)
    truths, preds = [], []
    for _ in range(6):
        xy = torch.rand(3, 2, generator=gen) * 100
        boxes = torch.cat([xy, xy + 10 + torch.rand(3, 2, generator=gen) * 60], dim=1)
        labels = torch.randint(1, 4, (3,), generator=gen)
        truths.append({"boxes": boxes, "labels": labels, "iscrowd": torch.zeros(3).long()})
        noisy = boxes + torch.randn(3, 4, generator=gen) * 4
        preds.append({"boxes": noisy, "scores": torch.rand(3, generator=gen),
                      "labels": torch.where(torch.rand(3, generator=gen) < 0.8, labels, 1)})
    figures, _ = score(preds, truths)
    assert 0.1 < figures["map"] < 0.95
    annotations = []
    for i, t in enumerate(truths):
        for b, lb in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": lb,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
    gt = {"images": [{"id": i} for i in range(6)], "annotations": annotations,
          "categories": [{"id": c} for c in (1, 2, 3)]}
    dt = [{"image_id": i, "category_id": int(lb), "score": float(s),
           "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
          for i, p in enumerate(preds)
          for b, lb, s in zip(p["boxes"].tolist(), p["labels"], p["scores"], strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(dt), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert figures["map"] == pytest.approx(evaluation.stats[0], abs=1e-6)
    assert figures["map_50"] == pytest.approx(evaluation.stats[1], abs=1e-6)
