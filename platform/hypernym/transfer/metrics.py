"""Pure metric functions of an evaluation: arrays in, numbers out (no model, no MLflow).

Per-class precision/recall/F1, their averages and the confusion matrix come from scikit-learn
(already a dependency). The expected calibration error, the confused pairs and the accuracy by
hierarchy level are written here: scikit-learn's ``calibration_curve`` is binary only, and the
other two are specific to this project's class hierarchies.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ECE_BINS", "calibration", "classification_metrics", "confused_pairs",
           "level_accuracy", "mean_std", "topk_accuracy"]

ECE_BINS = 15  # the usual choice since Guo et al. 2017, "On Calibration of Modern Neural Networks"


def topk_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores (k capped at classes)."""
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else 0.0


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict:
    """Per-class precision, recall, F1 and support, their macro and weighted averages, and the
    confusion matrix (rows: truth, columns: prediction).

    A class with no predictions has precision 0 (and no samples: recall 0), as scikit-learn's
    ``zero_division=0`` defines it.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = np.arange(num_classes)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    out = {"per_class": {"precision": p, "recall": r, "f1": f, "support": s},
           "confusion": confusion_matrix(labels, preds, labels=classes)}
    for average in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(labels, preds, labels=classes,
                                                        average=average, zero_division=0)
        out[average] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    return out


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the bins.

    ECE = sum over bins of (samples in bin / all samples) x |accuracy - mean confidence|; a
    confidence of exactly 1 falls in the last bin, 0 in the first.

    Returns:
        ``ece`` and per bin ``lower``, ``upper``, ``count``, ``accuracy``, ``confidence``
        (accuracy and confidence are NaN for an empty bin).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(which, weights=correct.astype(float), minlength=bins) / count
        conf = np.bincount(which, weights=confidence.astype(float), minlength=bins) / count
    n = max(len(confidence), 1)
    gaps = np.where(count > 0, np.abs(acc - conf), 0.0)
    return {"ece": float((count / n * gaps).sum()), "lower": edges[:-1], "upper": edges[1:],
            "count": count, "accuracy": acc, "confidence": conf}


def confused_pairs(confusion: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells: (true class, predicted class, count), count > 0,
    largest first (ties by class indices)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    pairs = sorted(zip(rows.tolist(), cols.tolist(), off[rows, cols].tolist(), strict=True),
                   key=lambda t: (-t[2], t[0], t[1]))
    return pairs[:k]


def level_accuracy(labels: np.ndarray, preds: np.ndarray, class_ids: Sequence[str],
                   class_paths: Mapping[str, Sequence[str]]) -> dict[int, dict[str, float]]:
    """Accuracy at each depth of the class tree: a prediction is right at level ``L`` when the
    predicted and the true class have the same ancestor at depth ``L`` (the root is depth 0,
    along each class's path in the manifest's hierarchy). Samples whose true class is shallower
    than ``L`` do not count at ``L``; a prediction shallower than ``L`` is wrong there.

    Levels above the classes' deepest common ancestor are right by construction, so the result
    starts at the first level where the classes split.

    Returns:
        {level: {"accuracy": ..., "samples": ...}}, levels in increasing order.
    """
    paths = [list(class_paths[c]) for c in class_ids]
    depth = max(len(p) for p in paths)
    # node id at each (class, level), "" where the class's path is shorter
    table = np.array([p + [""] * (depth - len(p)) for p in paths], dtype=object)
    first = next((lv for lv in range(depth) if len(set(table[:, lv]) - {""}) > 1), depth)
    out: dict[int, dict[str, float]] = {}
    for level in range(first, depth):
        truth, guess = table[labels, level], table[preds, level]
        valid = truth != ""
        if valid.any():
            out[level] = {"accuracy": float((truth[valid] == guess[valid]).mean()),
                          "samples": int(valid.sum())}
    return out


def mean_std(values: Sequence[float]) -> str:
    """``0.912 ± 0.008`` (mean and population std, e.g. over seeds), or the one value."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"
