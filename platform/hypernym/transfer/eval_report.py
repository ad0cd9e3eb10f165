"""The evaluation report of a classifier on a prepared dataset split.

`build_report` turns labels and softmax scores (from
`hypernym.transfer.evaluation.predict_split`) into top-1/top-5, per-class precision/recall/F1
with macro and weighted averages, the confusion matrix, the reliability diagram with its
expected calibration error, the most-confused class pairs and, when the classes form a tree
(WordNet synsets or a custom hierarchy), the accuracy at each level of the tree.
`log_report` sends it to an MLflow run (metrics, tables, images); `print_report` prints it.

Models trained with the semantic softmax are scored by a softmax over all their logits, like the
others: top-1 is then the argmax the training loop reports, and the calibration figures are
those of that flat softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hypernym.data.manifest import Manifest
from hypernym.errors import HypernymError
from hypernym.transfer import metrics as M

__all__ = ["Report", "as_json", "build_report", "check_classes", "class_columns",
           "contamination_metrics", "log_report", "print_report", "start_eval_run"]

PREFIX = "eval"  # metric and artifact prefix, in eval runs and in fine-tune runs alike


def start_eval_run(version, pinned: str, card, manifest: Manifest, dataset: str, *, split: str,
                   experiment: str, settings, tags: dict[str, str] | None = None) -> str:
    """The MLflow run of an evaluation of ``pinned`` (NAME/VERSION) on ``dataset``'s ``split``,
    tagged with what it scores and with the dataset and the model as its inputs."""
    from hypernym import tracking

    run_id = tracking.start_run(
        experiment=experiment, run_name=f"eval-{version.name}-v{version.version}-{manifest.name}",
        settings=settings,
        tags={"hypernym.kind": "eval", "hypernym.model": pinned,
              "hypernym.model_run_id": card.run_id or "",
              "hypernym.dataset_fingerprint": manifest.fingerprint, "hypernym.eval_split": split,
              **(tags or {})})
    try:
        tracking.log_inputs(run_id, dataset_name=manifest.name, fingerprint=manifest.fingerprint,
                            uri=dataset, context="eval",
                            model_id=getattr(version, "model_id", None), settings=settings)
    except BaseException:
        tracking.end_run(run_id, "FAILED", settings=settings)
        raise
    return run_id


def contamination_metrics(contamination: dict[str, Any] | None) -> dict[str, float]:
    """The contamination check's counts as metrics (none without a check)."""
    if not contamination:
        return {}
    return {f"{PREFIX}/contamination_{k}": contamination[k]
            for k in ("exact", "near", "checked") if k in contamination}


def class_columns(classes: list[dict[str, Any]]) -> dict[str, list]:
    """The per-class table's leading columns: index, class id, name."""
    return {"index": list(range(len(classes))), "id": [c["id"] for c in classes],
            "name": [c["name"] for c in classes]}


@dataclass
class Report:
    """Everything the report shows; arrays are indexed by class index."""

    split: str
    samples: int
    top1: float
    top5: float
    classes: list[dict[str, str]]  # [{id, name}] by index
    per_class: dict[str, np.ndarray]  # precision, recall, f1, support
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: np.ndarray
    calibration: dict[str, Any]
    pairs: list[tuple[int, int, int]]
    levels: dict[int, dict[str, float]] = field(default_factory=dict)
    contamination: dict[str, Any] | None = None

    def metrics(self) -> dict[str, float]:
        """The scalar figures, as MLflow metric names."""
        out = {f"{PREFIX}/top1": self.top1, f"{PREFIX}/top5": self.top5,
               f"{PREFIX}/ece": self.calibration["ece"], f"{PREFIX}/samples": self.samples}
        for avg, values in (("macro", self.macro), ("weighted", self.weighted)):
            out.update({f"{PREFIX}/{avg}_{k}": v for k, v in values.items()})
        out.update({f"{PREFIX}/level{lv}_top1": v["accuracy"] for lv, v in self.levels.items()})
        return {**out, **contamination_metrics(self.contamination)}

    def per_class_table(self) -> dict[str, list]:
        pc = self.per_class
        return {**class_columns(self.classes),
                **{k: [round(float(v), 4) for v in pc[k]] for k in ("precision", "recall", "f1")},
                "support": [int(v) for v in pc["support"]]}

    def pairs_table(self) -> dict[str, list]:
        name = [c["name"] for c in self.classes]
        return {"true": [name[t] for t, _, _ in self.pairs],
                "predicted": [name[p] for _, p, _ in self.pairs],
                "count": [n for _, _, n in self.pairs],
                "share_of_true": [round(n / max(int(self.per_class["support"][t]), 1), 4)
                                  for t, _, n in self.pairs]}


def build_report(labels: np.ndarray, probs: np.ndarray, manifest: Manifest, *,
                 split: str = "val", top_pairs: int = 10) -> Report:
    """The report of scores ``probs`` (samples x classes) against ``labels``. Pure."""
    classes = [{"id": c.id, "name": c.name} for c in manifest.classes]
    preds = probs.argmax(axis=1)
    cls = M.classification_metrics(labels, preds, len(classes))
    hierarchy = manifest.hierarchy or {}
    levels = {}
    if hierarchy.get("kind", "flat") != "flat" and "class_paths" in hierarchy:
        levels = M.level_accuracy(labels, preds, [c["id"] for c in classes],
                                  hierarchy["class_paths"])
    return Report(
        split=split, samples=len(labels), top1=M.topk_accuracy(labels, probs, 1),
        top5=M.topk_accuracy(labels, probs, 5), classes=classes, per_class=cls["per_class"],
        macro=cls["macro"], weighted=cls["weighted"], confusion=cls["confusion"],
        calibration=M.calibration(probs.max(axis=1), preds == labels),
        pairs=M.confused_pairs(cls["confusion"], top_pairs), levels=levels)


def check_classes(pinned: str, card, manifest, dataset: str) -> None:
    """Raise a HypernymError unless the dataset's classes are the model's, in order."""
    model_ids = [c["id"] for c in card.classes]
    data_ids = [c.id for c in manifest.classes]
    if model_ids and model_ids != data_ids:
        differ = sorted(set(model_ids) ^ set(data_ids))[:5]
        raise HypernymError(
            f"{pinned} was trained for {len(model_ids)} classes and {dataset} has "
            f"{len(data_ids)}; they differ{' in order' if not differ else ''} "
            f"{'(e.g. ' + ', '.join(differ) + ')' if differ else ''}: evaluate a model on the "
            "dataset its head was trained for")


def log_report(report: Report, run_id: str, *, settings=None) -> None:
    """Metrics, tables (per class, confused pairs, calibration bins, levels), the confusion
    matrix and the reliability diagram as images, and the whole report as JSON."""
    import matplotlib.pyplot as plt

    from hypernym import tracking
    from hypernym.transfer.figures import confusion_figure, reliability_figure

    tracking.log_run_metrics(run_id, report.metrics(), settings=settings)
    tracking.set_run_tags(run_id, {"hypernym.eval_split": report.split}, settings=settings)
    tracking.log_run_table(run_id, report.per_class_table(), f"{PREFIX}/per_class.json",
                           settings=settings)
    tracking.log_run_table(run_id, report.pairs_table(), f"{PREFIX}/confused_pairs.json",
                           settings=settings)
    cal = report.calibration
    tracking.log_run_table(run_id, {k: [_num(v) for v in cal[k]] for k in
                                    ("lower", "upper", "count", "accuracy", "confidence")},
                           f"{PREFIX}/calibration_bins.json", settings=settings)
    for name, fig in (("confusion_matrix", confusion_figure(report)),
                      ("reliability_diagram", reliability_figure(report))):
        tracking.log_run_figure(run_id, fig, f"{PREFIX}/{name}.png", settings=settings)
        plt.close(fig)
    tracking.log_run_dict(run_id, as_json(report), f"{PREFIX}/report.json", settings=settings)


def as_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON types (the confusion matrix as nested lists)."""
    return {"split": report.split, "samples": report.samples, "top1": report.top1,
            "top5": report.top5, "macro": report.macro, "weighted": report.weighted,
            "ece": report.calibration["ece"], "per_class": report.per_class_table(),
            "confused_pairs": report.pairs_table(),
            "levels": {str(k): v for k, v in report.levels.items()},
            "confusion": report.confusion.tolist(), "contamination": report.contamination}


def _num(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)


def print_report(report: Report, console, *, title: str = "evaluation", rows: int = 20) -> None:
    """Rich tables: summary, per class (the ``rows`` weakest by F1 when there are more),
    confused pairs, accuracy by level and the contamination found."""
    from rich.table import Table

    summary = Table(title=f"{title}: {report.split} split, {report.samples} images")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, value in report.metrics().items():
        if "/level" in key:  # their own table below
            continue
        summary.add_row(key.removeprefix(f"{PREFIX}/"),
                        f"{value:.0f}" if key.endswith(("samples", "exact", "near", "checked"))
                        else f"{value:.4f}")
    console.print(summary)

    pc = report.per_class
    order = list(range(len(report.classes)))
    shown = order if len(order) <= rows else sorted(order, key=lambda i: pc["f1"][i])[:rows]
    per = Table(title="per class" + ("" if shown is order else f" ({rows} lowest F1 of "
                                                                f"{len(order)})"))
    for col in ("class", "precision", "recall", "f1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for i in shown:
        c = report.classes[i]
        label = c["name"] if c["name"] == c["id"] else f"{c['name']} ({c['id']})"
        per.add_row(label, *(f"{pc[k][i]:.3f}" for k in ("precision", "recall", "f1")),
                    str(int(pc["support"][i])))
    console.print(per)

    if report.pairs:
        pairs = Table(title="most confused pairs (true -> predicted)")
        for col in ("true", "predicted", "count", "share of true"):
            pairs.add_column(col)
        table = report.pairs_table()
        for row in zip(*table.values(), strict=True):
            pairs.add_row(row[0], row[1], str(row[2]), f"{row[3]:.3f}")
        console.print(pairs)
    if report.levels:
        levels = Table(title="accuracy by hierarchy level (same ancestor at that depth)")
        for col in ("level", "accuracy", "samples"):
            levels.add_column(col, justify="right")
        for level, value in report.levels.items():
            levels.add_row(str(level), f"{value['accuracy']:.4f}", str(value["samples"]))
        console.print(levels)
    if report.contamination:
        c = report.contamination
        console.print(f"contamination against {c.get('against', '?')}: {c.get('exact', 0)} "
                      f"exact and {c.get('near', 0)} near duplicates among {c.get('checked', 0)} "
                      "evaluation images")
