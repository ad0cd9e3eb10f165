"""Pure figures of multi-label predictions: arrays in, numbers out (no model, no process group).

``targets`` are bool [N, C] (image n shows class c), ``scores`` float [N, C] probabilities (one
sigmoid per class). The figures are those the COCO and VOC multi-label literature reports
(ML-GCN, Chen et al. 2019; ASL, Ridnik et al. 2021):

- mAP: the mean over classes of each class's average precision (scikit-learn's
  ``average_precision_score``: the area under the precision-recall step curve, no
  interpolation). A class without a positive image has no AP and is left out of the mean.
- at a threshold: per-class precision, recall and F1; overall (micro) precision, recall and F1
  over every (image, class) decision (OP, OR, OF1); and the class averages CP, CR with
  CF1 = 2 CP CR / (CP + CR).
- the best threshold per class: the score that maximises the class's F1 (from its
  precision-recall curve); classes without a positive keep the given threshold.
- label cardinality: labels per image, true against predicted (at the thresholds) and expected
  (the sum of an image's probabilities).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["average_precision", "best_thresholds", "cardinality", "decisions", "summary"]


def average_precision(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """float [C]: each class's average precision; NaN for a class without a positive."""
    from sklearn.metrics import average_precision_score

    out = np.full(targets.shape[1], np.nan)
    for c in np.flatnonzero(targets.any(axis=0)):
        out[c] = average_precision_score(targets[:, c], scores[:, c])
    return out


def decisions(targets: np.ndarray, scores: np.ndarray,
              thresholds: float | np.ndarray) -> dict[str, np.ndarray | float]:
    """Precision, recall and F1 of predicting ``scores >= thresholds`` (one, or one per class).

    Returns:
        ``precision``, ``recall``, ``f1``, ``support`` per class (0 where undefined, as
        scikit-learn's ``zero_division=0``); ``op``, ``or``, ``of1`` (overall); ``cp``, ``cr``,
        ``cf1`` (class averages).
    """
    predicted = scores >= np.asarray(thresholds)
    tp = (predicted & targets).sum(axis=0).astype(float)
    fp = (predicted & ~targets).sum(axis=0).astype(float)
    fn = (~predicted & targets).sum(axis=0).astype(float)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    op, orr = _ratio(tp.sum(), tp.sum() + fp.sum()), _ratio(tp.sum(), tp.sum() + fn.sum())
    cp, cr = float(precision.mean()), float(recall.mean())
    return {"precision": precision, "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": targets.sum(axis=0), "op": float(op), "or": float(orr),
            "of1": float(_ratio(2 * op * orr, op + orr)), "cp": cp, "cr": cr,
            "cf1": float(_ratio(2 * cp * cr, cp + cr))}


def best_thresholds(targets: np.ndarray, scores: np.ndarray,
                    fallback: float) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds [C], F1 at them [C]): per class, the score that maximises its F1 on these
    images (ties: the higher threshold); ``fallback`` and NaN for a class without a positive."""
    from sklearn.metrics import precision_recall_curve

    thresholds = np.full(targets.shape[1], float(fallback))
    best = np.full(targets.shape[1], np.nan)
    for c in np.flatnonzero(targets.any(axis=0)):
        precision, recall, cuts = precision_recall_curve(targets[:, c], scores[:, c])
        f1 = _ratio(2 * precision[:-1] * recall[:-1], precision[:-1] + recall[:-1])
        i = len(f1) - 1 - int(np.argmax(f1[::-1]))  # the last (highest) cut among equals
        thresholds[c], best[c] = float(cuts[i]), float(f1[i])
    return thresholds, best


def cardinality(targets: np.ndarray, scores: np.ndarray,
                thresholds: float | np.ndarray) -> dict:
    """How many labels the model gives an image, against how many it has.

    Returns:
        ``true``, ``predicted`` (at the thresholds) and ``expected`` (sum of probabilities)
        mean labels per image, and ``by_true``: per true count k (images with k labels), the
        images, and their mean predicted and expected counts.
    """
    true = targets.sum(axis=1)
    predicted = (scores >= np.asarray(thresholds)).sum(axis=1)
    expected = scores.sum(axis=1)
    rows = {int(k): {"images": int((true == k).sum()),
                     "predicted": float(predicted[true == k].mean()),
                     "expected": float(expected[true == k].mean())} for k in np.unique(true)}
    return {"true": float(true.mean()), "predicted": float(predicted.mean()),
            "expected": float(expected.mean()), "by_true": rows}


def summary(targets: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """The validation figures: ``map``, overall and class-average precision, recall and F1 at
    ``threshold``, and ``f1_tuned``, the overall F1 with each class's best threshold (tuned on
    these same images: an upper bound of what tuning gives), with the per-class arrays under
    ``per_class`` (``ap``, ``f1``, ``threshold``, ``f1_best``)."""
    ap = average_precision(targets, scores)
    at = decisions(targets, scores, threshold)
    tuned, f1_best = best_thresholds(targets, scores, threshold)
    with warnings.catch_warnings():  # a split without any positive: no AP at all
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_ap = float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0
    return {"map": mean_ap, "precision": at["op"], "recall": at["or"], "f1": at["of1"],
            "class_precision": at["cp"], "class_recall": at["cr"], "class_f1": at["cf1"],
            "f1_tuned": decisions(targets, scores, tuned)["of1"],
            "per_class": {"ap": ap, "f1": at["f1"], "threshold": tuned, "f1_best": f1_best}}


def _ratio(num, den):
    """num / den, 0 where den is 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
