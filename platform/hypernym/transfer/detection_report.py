"""The evaluation report of a detector on a prepared dataset split.

`detect_split` runs the detector over the split once (the project's reader, each image resized
to the detector's input size) and keeps its detections in the stored images' pixels;
`build_detection_report` scores them with COCO's evaluation (torchmetrics'
`MeanAveragePrecision` on pycocotools, `hypernym.train.detection_metrics`): mAP@[.5:.95],
mAP@.5, mAP@.75, mAP and recall by object size, and AP per class. `log_detection_report` sends
it to an MLflow run with a picture of detections drawn on validation images;
`write_coco_results` writes the detections in COCO's result format with the split's ground
truth beside them, which pycocotools reads back to the same figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hypernym.data.box_codec import BoxCodec
from hypernym.data.manifest import Manifest
from hypernym.errors import HypernymError
from hypernym.train.detection_metrics import ground_truth, in_stored_pixels, score

__all__ = ["DetectionPass", "DetectionReport", "build_detection_report", "detect_split",
           "gt_path", "write_coco_results"]

PREFIX = "eval"
_SHOWN = 8  # validation images the report draws


@dataclass
class DetectionPass:
    """A detector's detections over a split: per image (in split order of reading), its
    detections and ground truth in the stored image's pixels, and its sample id; the first
    images with their detections at the input size, to draw."""

    predictions: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    shown: list[tuple[torch.Tensor, dict, dict]] = field(default_factory=list)


@dataclass
class DetectionReport:
    """COCO's figures (``map``, ``map_50``, ...), AP per class, and what was scored."""

    split: str
    samples: int
    boxes: int
    figures: dict[str, float]
    per_class: list[dict[str, Any]]  # index, id, name, boxes, ap, ar_100 (-1: no such boxes)
    metric: Any = None  # torchmetrics' metric, holding every image (for the COCO files)

    def metrics(self) -> dict[str, float]:
        """The scalar figures, as MLflow metric names."""
        return {**{f"{PREFIX}/{k}": v for k, v in self.figures.items()},
                f"{PREFIX}/samples": self.samples, f"{PREFIX}/boxes": self.boxes}

    def as_json(self) -> dict[str, Any]:
        return {"split": self.split, "samples": self.samples, "boxes": self.boxes,
                **self.figures, "per_class": self.per_class}


@torch.no_grad()
def detect_split(model: torch.nn.Module, manifest: Manifest, root: str, *, split: str,
                 img_size: int, batch_size: int = 16, device: str | None = None) -> DetectionPass:
    """Run ``model`` (a plain detector: 0-1 images in, torchvision's detections out) over
    ``split``.

    Raises:
        HypernymError: the split does not exist or is empty.
    """
    from hypernym.data.reader import make_loader

    if manifest.num_samples(split) == 0:
        raise HypernymError(f"dataset {manifest.name!r} has no samples in split {split!r}; its "
                            f"splits: {', '.join(manifest.splits) or 'none'}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(dev).eval()
    loader = make_loader(manifest, root, split, rank=0, world_size=1, epoch=0,
                         batch_size=batch_size, img_size=img_size, train=False,
                         codec=BoxCodec(img_size, train=False))
    out = DetectionPass()
    for batch in loader:
        images = batch.image.to(dev).float() / 255.0
        for image, detected, target, sample in zip(images, model(list(images)), batch.target,
                                                   batch.id.tolist(), strict=True):
            out.predictions.append(in_stored_pixels(detected, target["size"], img_size))
            out.targets.append({**ground_truth(target), "size": target["size"]})
            out.ids.append(sample)
            if len(out.shown) < _SHOWN:
                out.shown.append((image.mul(255).byte().cpu(), {k: v.cpu() for k, v in
                                                               detected.items()}, target))
    return out


def build_detection_report(detections: DetectionPass, manifest: Manifest, *,
                           split: str = "val") -> DetectionReport:
    """COCO's figures and per-class AP of a split's detections."""
    targets = [{k: v for k, v in t.items() if k != "size"} for t in detections.targets]
    figures, (metric, result) = score(detections.predictions, targets, class_metrics=True)
    counts = torch.zeros(len(manifest.classes), dtype=torch.int64)
    for target in targets:
        counts += torch.bincount(target["labels"] - 1, minlength=len(manifest.classes))
    per_label = {}
    if "classes" in result:  # the labels seen (detector labels: class index + 1)
        labels = result["classes"].flatten().tolist()
        aps = result["map_per_class"].flatten().tolist()
        ars = result["mar_100_per_class"].flatten().tolist()
        per_label = {int(lb): (ap, ar) for lb, ap, ar in zip(labels, aps, ars, strict=True)}
    per_class = [{"index": i, "id": c.id, "name": c.name, "boxes": int(counts[i]),
                  "ap": round(per_label.get(i + 1, (-1.0, -1.0))[0], 6),
                  "ar_100": round(per_label.get(i + 1, (-1.0, -1.0))[1], 6)}
                 for i, c in enumerate(manifest.classes)]
    return DetectionReport(split=split, samples=len(targets), boxes=int(counts.sum()),
                           figures=figures, per_class=per_class, metric=metric)


def gt_path(results: str | Path) -> Path:
    """Where `write_coco_results` puts the ground truth beside ``results``."""
    results = Path(results)
    return results.with_name(results.stem + "_gt.json")


def write_coco_results(report: DetectionReport, detections: DetectionPass, manifest: Manifest,
                       root: str, path: str | Path) -> tuple[Path, Path]:
    """The detections in COCO's result format (``[{image_id, category_id, bbox: [x, y, w, h],
    score}]``) at ``path``, and the split's ground truth in COCO's instances format beside it
    (`gt_path`). Image ids are the samples' ids in the split (file names: the source images'),
    category ids the class index + 1. Both are torchmetrics' own conversion of what it scored
    (``tm_to_coco``), so pycocotools reads back the report's figures."""
    import tempfile

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        report.metric.tm_to_coco(f"{tmp}/coco")
        results = json.loads(Path(f"{tmp}/coco_preds.json").read_text())
        truth = json.loads(Path(f"{tmp}/coco_target.json").read_text())
    ids = detections.ids  # torchmetrics numbers the images 0.. in the order it saw them
    names = _sources(manifest, root, report.split, set(ids))
    for item in results + truth["annotations"]:
        item["image_id"] = ids[item["image_id"]]
    truth["images"] = [{"id": sample, "file_name": names.get(sample, str(sample)),
                        "height": int(t["size"][0]), "width": int(t["size"][1])}
                       for sample, t in zip(ids, detections.targets, strict=True)]
    truth["categories"] = [{"id": i + 1, "name": c.name, "class_id": c.id}
                           for i, c in enumerate(manifest.classes)]
    truth["info"] = {"description": f"{manifest.name} {report.split}, ground truth of "
                                    "hypernym eval --coco-results"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    gt_path(path).write_text(json.dumps(truth))
    return path, gt_path(path)


def _sources(manifest: Manifest, root: str, split: str, wanted: set[int]) -> dict[int, str]:
    """Sample id -> the source image's name (its ``json`` member's ``source``), numbered as the
    reader numbers samples (`hypernym.data.schedule`)."""
    from hypernym.data.reader import read_members

    out, offset = {}, 0
    for shard, url in zip(manifest.splits[split], manifest.shard_urls(root, split),
                          strict=True):
        for position, (key, fields) in enumerate(read_members(url, members=("jpg", "json"))):
            if offset + position in wanted:
                out[offset + position] = json.loads(fields["json"]).get("source", key)
        offset += shard.samples
    return out


def prediction_figure(detections: DetectionPass, manifest: Manifest, *,
                      score_threshold: float):
    """A matplotlib figure of the first validation images: the ground truth in green, the
    detections scoring at least ``score_threshold`` in red with their class and score."""
    import matplotlib.pyplot as plt
    from torchvision.utils import draw_bounding_boxes, make_grid

    drawn = []
    for image, detected, target in detections.shown:
        size = image.shape[-1]
        height, width = (int(v) for v in target["size"])
        scale = torch.tensor([size / width, size / height] * 2)
        image = draw_bounding_boxes(image, target["boxes"].float() * scale, colors="lime")
        keep = detected["scores"] >= score_threshold
        labels = [f"{manifest.classes[int(lb) - 1].name} {s:.2f}"
                  for lb, s in zip(detected["labels"][keep], detected["scores"][keep],
                                   strict=True)]
        drawn.append(draw_bounding_boxes(image, detected["boxes"][keep], labels=labels,
                                         colors="red"))
    grid = make_grid(drawn, nrow=4, padding=4, pad_value=255)
    fig, ax = plt.subplots(figsize=(12, 3 * -(-len(drawn) // 4)))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    ax.set_title(f"detections scoring {score_threshold} or more (red), ground truth (green)")
    fig.tight_layout()
    return fig
