"""The report's images: the confusion matrix and the reliability diagram (matplotlib, Agg).

The Agg backend renders without a display, so reports work on headless cluster nodes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_figure", "reliability_figure"]

_LABELLED = 30  # up to this many classes the axes name them and the cells show counts


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(report):
    """Rows: true class, columns: prediction, coloured by the row's share (recall per row)."""
    plt = _pyplot()
    cm = report.confusion
    n = len(cm)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.35 * n, 14) if n <= _LABELLED else 10
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= _LABELLED:
        names = [c["name"] for c in report.classes]
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, {report.split} ({report.samples} images, "
                 f"top-1 {report.top1:.3f})")
    fig.tight_layout()
    return fig


def reliability_figure(report):
    """Accuracy against confidence per bin, the diagonal of perfect calibration, and how many
    samples each bin holds."""
    plt = _pyplot()
    cal = report.calibration
    lower, upper = np.asarray(cal["lower"]), np.asarray(cal["upper"])
    width, count = upper - lower, np.asarray(cal["count"])
    acc = np.nan_to_num(np.asarray(cal["accuracy"], dtype=float))
    conf = np.asarray(cal["confidence"], dtype=float)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=[3, 1], sharex=True)
    top.bar(lower, acc, width=width, align="edge", edgecolor="black", label="accuracy")
    gap = np.where(count > 0, np.nan_to_num(conf) - acc, 0)
    top.bar(lower, gap, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.3,
            label="gap to confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability, {report.split}: ECE {cal['ece']:.4f} ({len(lower)} bins)")
    top.legend(loc="upper left")
    bottom.bar(lower, count, width=width, align="edge", edgecolor="black", color="tab:gray")
    bottom.set_xlabel("confidence (top-1 softmax score)")
    bottom.set_ylabel("samples")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    return fig
