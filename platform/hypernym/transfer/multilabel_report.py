"""The evaluation report of a multi-label model on a prepared dataset split.

`multilabel_report` scores the split once (the task's evaluation codec: the whole image
resized, sigmoid per class; `hypernym.train.tasks.multilabel_eval`) and builds the report: mAP
and each class's average precision, precision/recall/F1 at the model's own per-class thresholds
(its card's, tuned on its validation split) overall and per class, each class's best threshold
on this split, the precision-recall curves, and the label-cardinality calibration (how many
labels the model gives an image against how many it has). `log_multilabel_report` sends it to
an MLflow run under the same ``eval/`` prefix as the single-label report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import hypernym.train.tasks.multilabel_metrics as M
from hypernym.data.manifest import Manifest
from hypernym.transfer.eval_report import PREFIX, class_columns, contamination_metrics

__all__ = ["MultiLabelReport", "build_multilabel_report", "log_multilabel_report",
           "multilabel_report", "print_multilabel_report"]

IMAGES = ("pr_curve", "cardinality")


@dataclass
class MultiLabelReport:
    """Everything the report shows; per-class arrays are indexed by class index."""

    split: str
    samples: int
    classes: list[dict[str, str]]
    map: float
    overall: dict[str, float]  # op, or, of1, cp, cr, cf1 at the thresholds
    per_class: dict[str, np.ndarray]  # ap, precision, recall, f1, threshold, support, ...
    cardinality: dict[str, Any]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    contamination: dict[str, Any] | None = None

    def metrics(self) -> dict[str, float]:
        """The scalar figures, as MLflow metric names."""
        o, c = self.overall, self.cardinality
        out = {f"{PREFIX}/map": self.map, f"{PREFIX}/precision": o["op"],
               f"{PREFIX}/recall": o["or"], f"{PREFIX}/f1": o["of1"],
               f"{PREFIX}/class_precision": o["cp"], f"{PREFIX}/class_recall": o["cr"],
               f"{PREFIX}/class_f1": o["cf1"], f"{PREFIX}/samples": self.samples,
               f"{PREFIX}/classes_scored": int(np.isfinite(self.per_class["ap"]).sum()),
               **{f"{PREFIX}/cardinality_{k}": c[k] for k in ("true", "predicted", "expected")}}
        return {**out, **contamination_metrics(self.contamination)}

    def per_class_table(self) -> dict[str, list]:
        pc = self.per_class
        return {**class_columns(self.classes),
                **{k: [_num(v) for v in pc[k]] for k in
                   ("ap", "precision", "recall", "f1", "threshold", "best_threshold", "f1_best")},
                "support": [int(v) for v in pc["support"]]}

    def cardinality_table(self) -> dict[str, list]:
        rows = self.cardinality["by_true"]
        return {"true_labels": list(rows), **{k: [rows[n][k] for n in rows]
                                              for k in ("images", "predicted", "expected")}}


def multilabel_report(model, manifest: Manifest, root: str, *, split: str, img_size: int,
                      mean, std, batch_size: int, thresholds) -> MultiLabelReport:
    """Score ``split`` with ``model`` and build its report at ``thresholds`` (one per class,
    or one for all)."""
    from hypernym.train.tasks.multilabel_eval import score_split

    targets, scores = score_split(model, manifest, root, split, img_size=img_size, mean=mean,
                                  std=std, batch_size=batch_size)
    return build_multilabel_report(targets, scores, manifest, thresholds=thresholds,
                                   split=split)


def build_multilabel_report(targets: np.ndarray, scores: np.ndarray, manifest: Manifest, *,
                            thresholds, split: str = "val") -> MultiLabelReport:
    """The report of ``scores`` against ``targets`` (bool) at ``thresholds``. Pure."""
    from sklearn.metrics import precision_recall_curve

    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), (targets.shape[1],))
    at = M.decisions(targets, scores, thresholds)
    best, f1_best = M.best_thresholds(targets, scores, np.nan)
    ap = M.average_precision(targets, scores)
    curves = {}
    if targets.any():  # micro-average: every (image, class) decision as one binary problem
        precision, recall, _ = precision_recall_curve(targets.ravel(), scores.ravel())
        curves["micro"] = (precision, recall)
    for c in np.flatnonzero(targets.any(axis=0)):
        precision, recall, _ = precision_recall_curve(targets[:, c], scores[:, c])
        curves[str(c)] = (precision, recall)
    return MultiLabelReport(
        split=split, samples=len(targets),
        classes=[{"id": c.id, "name": c.name} for c in manifest.classes],
        map=float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
        overall={k: at[k] for k in ("op", "or", "of1", "cp", "cr", "cf1")},
        per_class={"ap": ap, "precision": at["precision"], "recall": at["recall"],
                   "f1": at["f1"], "threshold": np.array(thresholds), "support": at["support"],
                   "best_threshold": best, "f1_best": f1_best},
        cardinality=M.cardinality(targets, scores, thresholds), curves=curves)


def log_multilabel_report(report: MultiLabelReport, run_id: str, *, settings=None) -> None:
    """Metrics, the per-class and cardinality tables, the precision-recall curves and the
    cardinality calibration as images, and the whole report as JSON."""
    import matplotlib.pyplot as plt

    from hypernym import tracking
    from hypernym.transfer.multilabel_figures import cardinality_figure, pr_curve_figure

    tracking.log_run_metrics(run_id, report.metrics(), settings=settings)
    tracking.set_run_tags(run_id, {"hypernym.eval_split": report.split}, settings=settings)
    tracking.log_run_table(run_id, report.per_class_table(), f"{PREFIX}/per_class.json",
                           settings=settings)
    tracking.log_run_table(run_id, report.cardinality_table(), f"{PREFIX}/cardinality.json",
                           settings=settings)
    for name, fig in zip(IMAGES, (pr_curve_figure(report), cardinality_figure(report)),
                         strict=True):
        tracking.log_run_figure(run_id, fig, f"{PREFIX}/{name}.png", settings=settings)
        plt.close(fig)
    tracking.log_run_dict(run_id, as_json(report), f"{PREFIX}/report.json", settings=settings)


def as_json(report: MultiLabelReport) -> dict[str, Any]:
    return {"split": report.split, "samples": report.samples, "objective": "multilabel",
            "map": report.map, "overall": report.overall,
            "per_class": report.per_class_table(),
            "cardinality": {**{k: report.cardinality[k] for k in ("true", "predicted",
                                                                 "expected")},
                            "by_true": {str(k): v for k, v in
                                        report.cardinality["by_true"].items()}},
            "contamination": report.contamination}


def _num(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)


def print_multilabel_report(report: MultiLabelReport, console, *, title: str = "evaluation",
                            rows: int = 20) -> None:
    """Rich tables: summary, per class (the ``rows`` lowest AP when there are more), and the
    label cardinality by true count."""
    from rich.table import Table

    summary = Table(title=f"{title}: {report.split} split, {report.samples} images "
                          "(multi-label)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, value in report.metrics().items():
        whole = key.endswith(("samples", "scored", "exact", "near", "checked"))
        summary.add_row(key.removeprefix(f"{PREFIX}/"), f"{value:.0f}" if whole
                        else f"{value:.4f}")
    console.print(summary)
    pc, order = report.per_class, list(range(len(report.classes)))
    shown = order if len(order) <= rows else sorted(
        order, key=lambda i: np.nan_to_num(pc["ap"][i], nan=2.0))[:rows]
    per = Table(title="per class" + ("" if shown is order else
                                     f" ({rows} lowest AP of {len(order)})"))
    for col in ("class", "AP", "precision", "recall", "f1", "threshold", "best threshold",
                "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for i in shown:
        c = report.classes[i]
        label = c["name"] if c["name"] == c["id"] else f"{c['name']} ({c['id']})"
        per.add_row(label, *(_cell(pc[k][i]) for k in ("ap", "precision", "recall", "f1",
                                                        "threshold", "best_threshold")),
                    str(int(pc["support"][i])))
    console.print(per)
    card = Table(title="labels per image: predicted (at the thresholds) and expected (sum of "
                       "probabilities), by true count")
    for col in ("true labels", "images", "predicted", "expected"):
        card.add_column(col, justify="right")
    for k, row in report.cardinality["by_true"].items():
        card.add_row(str(k), str(row["images"]), f"{row['predicted']:.2f}",
                     f"{row['expected']:.2f}")
    console.print(card)


def _cell(value) -> str:
    return "-" if np.isnan(value) else f"{value:.3f}"
