"""The multi-label report's images: precision-recall curves and the label-cardinality
calibration (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import numpy as np

__all__ = ["cardinality_figure", "pr_curve_figure"]

_LABELLED = 12  # up to this many classes each curve is named in the legend


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pr_curve_figure(report):
    """The micro-averaged precision-recall curve (every image-class decision), each class's
    curve thinly, and the operating point of the model's thresholds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    per_class = [k for k in report.curves if k != "micro"]
    for key in per_class:
        precision, recall = report.curves[key]
        c = int(key)
        label = (f"{report.classes[c]['name']} (AP {report.per_class['ap'][c]:.2f})"
                 if len(per_class) <= _LABELLED else None)
        ax.step(recall, precision, where="post", linewidth=0.8, alpha=0.6, label=label)
    if "micro" in report.curves:
        precision, recall = report.curves["micro"]
        ax.step(recall, precision, where="post", color="black", linewidth=2.2,
                label="all classes (micro-average)")
    o = report.overall
    ax.plot([o["or"]], [o["op"]], "o", color="tab:red", markersize=9,
            label=f"at the thresholds: P {o['op']:.2f}, R {o['or']:.2f}, F1 {o['of1']:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall, {report.split} ({report.samples} images): "
                 f"mAP {report.map:.3f}")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def cardinality_figure(report):
    """Labels per image: for each true count, the mean predicted (at the thresholds) and
    expected (sum of probabilities) counts against the diagonal of a calibrated model, over
    how many images have that count."""
    plt = _pyplot()
    rows = report.cardinality["by_true"]
    true = np.array(list(rows), dtype=float)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=[3, 1], sharex=True)
    top.plot(true, [rows[k]["predicted"] for k in rows], "o-", label="predicted (thresholds)")
    top.plot(true, [rows[k]["expected"] for k in rows], "s--", label="expected (sum of probs)")
    span = [0, max(true.max(), 1) + 0.5]
    top.plot(span, span, ":", color="gray", label="calibrated")
    c = report.cardinality
    top.set_ylabel("labels per image (mean)")
    top.set_title(f"label cardinality, {report.split}: true {c['true']:.2f}, predicted "
                  f"{c['predicted']:.2f}, expected {c['expected']:.2f}")
    top.legend(loc="upper left")
    bottom.bar(true, [rows[k]["images"] for k in rows], width=0.6, color="tab:gray")
    bottom.set_xlabel("true labels per image")
    bottom.set_ylabel("images")
    bottom.set_xticks(true)
    fig.tight_layout()
    return fig
