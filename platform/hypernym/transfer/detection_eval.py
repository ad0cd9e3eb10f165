"""Where a detector's evaluation report runs: `run_detection_eval` (``hypernym eval`` on a
registered detector: its own MLflow run) and `report_detection_finetune` (the end of a detection
fine-tune, into its run). The report itself is `hypernym.transfer.detection_report`'s."""

from __future__ import annotations

import logging
from pathlib import Path

from hypernym.settings import Settings, get_settings
from hypernym.transfer.detection_report import (
    PREFIX,
    DetectionReport,
    build_detection_report,
    detect_split,
    prediction_figure,
    write_coco_results,
)

__all__ = ["log_detection_report", "print_detection_report", "report_detection_finetune",
           "run_detection_eval"]

log = logging.getLogger(__name__)


def run_detection_eval(version, card, dataset: str, *, split: str = "val", batch_size: int = 16,
                       experiment: str = "hypernym", coco_results: str | None = None,
                       settings: Settings | None = None) -> tuple[DetectionReport, str]:
    """Evaluate the registered detector ``version`` (its ``card``) on a prepared dataset's
    split, in a new MLflow run of kind ``eval``; with ``coco_results``, also write the
    detections there in COCO's result format (and the ground truth beside them).

    Raises:
        HypernymError: the dataset's classes are not the detector's, or the split is empty.
    """
    import tempfile

    from safetensors.torch import load_file

    from hypernym import tracking
    from hypernym.data.manifest import read_manifest
    from hypernym.registry.card import WEIGHTS_FILE
    from hypernym.registry.detector_model import build_detector
    from hypernym.registry.models import pull
    from hypernym.transfer.eval_report import check_classes, start_eval_run

    settings = settings or get_settings()
    pinned = f"{version.name}/{version.version}"
    manifest = read_manifest(dataset)
    check_classes(pinned, card, manifest, dataset)
    model = build_detector(card.detection)
    with tempfile.TemporaryDirectory() as tmp:
        local = pull(pinned, tmp, timm_config=False, settings=settings)  # sha256 checked
        model.load_state_dict(load_file(str(local / WEIGHTS_FILE)))
    run_id = start_eval_run(version, pinned, card, manifest, dataset, split=split,
                            experiment=experiment, settings=settings,
                            tags={"hypernym.task": "detection"})
    status = "FAILED"
    try:
        detections = detect_split(model, manifest, dataset, split=split,
                                  img_size=card.detection["img_size"], batch_size=batch_size)
        report = build_detection_report(detections, manifest, split=split)
        log_detection_report(report, detections, manifest, run_id,
                             score_threshold=card.detection["score_threshold"],
                             settings=settings)
        if coco_results:
            files = write_coco_results(report, detections, manifest, dataset, coco_results)
            for file in files:
                tracking.log_run_dict(run_id, _json(file), f"{PREFIX}/coco/{file.name}",
                                      settings=settings)
        status = "FINISHED"
        return report, run_id
    finally:
        tracking.end_run(run_id, status, settings=settings)


def _json(path: Path):
    import json

    return json.loads(path.read_text())


def report_detection_finetune(recipe, task, run_id: str, *, registered=None, checkpoint=None,
                              metrics: dict[str, float] | None = None, dataset=None,
                              settings: Settings | None = None) -> DetectionReport | None:
    """The report of a finished detection fine-tune on its val split, into its run: the
    registered detector, or the weights registration would have chosen from the final
    checkpoint (``dataset``: the run's, already opened). A failure is logged, not raised: the
    model is trained by then."""
    settings = settings or get_settings()
    try:
        from hypernym.data.manifest import read_manifest
        from hypernym.train.checkpoint import load_state
        from hypernym.train.registration import choose_weights, load_weights

        manifest = dataset.manifest if dataset is not None else read_manifest(recipe.data.path)
        if manifest.num_samples("val") == 0 or checkpoint is None:
            return None
        model = task.export_model(recipe)
        with checkpoint.as_directory() as ckpt_dir:  # the registered weights are these
            load_weights(model, choose_weights(recipe, load_state(ckpt_dir), metrics or {})[0])
        detections = detect_split(model, manifest, recipe.data.path, split="val",
                                  img_size=recipe.data.img_size,
                                  batch_size=recipe.data.batch_size)
        report = build_detection_report(detections, manifest, split="val")
        log_detection_report(report, detections, manifest, run_id,
                             score_threshold=recipe.detection.score_threshold, settings=settings)
        return report
    except Exception as exc:  # noqa: BLE001 - the trained model must not be lost to a report
        log.warning("the evaluation report of run %s failed: %s", run_id, exc, exc_info=True)
        return None


def log_detection_report(report: DetectionReport, detections, manifest, run_id: str, *,
                         score_threshold: float, settings: Settings | None = None) -> None:
    """Metrics (``eval/map``...), the per-class AP table, the picture of detections on the
    first validation images, and the report as JSON."""
    import matplotlib.pyplot as plt

    from hypernym import tracking

    tracking.log_run_metrics(run_id, report.metrics(), settings=settings)
    tracking.set_run_tags(run_id, {"hypernym.eval_split": report.split}, settings=settings)
    table = {key: [row[key] for row in report.per_class] for key in
             ("index", "id", "name", "boxes", "ap", "ar_100")}
    tracking.log_run_table(run_id, table, f"{PREFIX}/per_class_ap.json", settings=settings)
    fig = prediction_figure(detections, manifest, score_threshold=score_threshold)
    tracking.log_run_figure(run_id, fig, f"{PREFIX}/predictions.png", settings=settings)
    plt.close(fig)
    tracking.log_run_dict(run_id, report.as_json(), f"{PREFIX}/report.json", settings=settings)


def print_detection_report(report: DetectionReport, console, *, title: str = "evaluation",
                           rows: int = 20) -> None:
    """Rich tables: COCO's figures, and AP per class (the ``rows`` lowest when there are
    more)."""
    from rich.table import Table

    summary = Table(title=f"{title}: {report.split} split, {report.samples} images, "
                          f"{report.boxes} boxes")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, value in report.figures.items():
        summary.add_row(key, f"{value:.4f}")
    console.print(summary)
    shown = report.per_class if len(report.per_class) <= rows else \
        sorted(report.per_class, key=lambda r: r["ap"])[:rows]
    per = Table(title="AP@[.5:.95] per class" + (
        "" if shown is report.per_class else f" ({rows} lowest of {len(report.per_class)})"))
    for col in ("class", "boxes", "AP", "AR@100"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for row in shown:
        label = row["name"] if row["name"] == row["id"] else f"{row['name']} ({row['id']})"
        per.add_row(label, str(row["boxes"]), f"{row['ap']:.4f}", f"{row['ar_100']:.4f}")
    console.print(per)
