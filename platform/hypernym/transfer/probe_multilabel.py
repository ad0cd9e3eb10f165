"""The cheap probes on a multi-label dataset: each reports mAP (macro over classes).

- k-NN: the k nearest training features (cosine, DINO's exp(sim / T) weights) vote with their
  multi-hot targets; a class's score is its weighted share of the votes.
- linear: one-vs-rest logistic regression, one binary classifier per class with an L2 penalty
  (scikit-learn's default C = 1), all fitted at once by full-batch L-BFGS: their objectives
  share no parameter, so the joint fit is the separate fits.

Few-shot draws pick ``shots`` images per class among the images showing it (an image drawn for
one class counts for its other labels too).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hypernym.train.tasks.multilabel_metrics import average_precision
from hypernym.transfer.linear_fit import fit_standardised_linear

__all__ = ["few_shot_multilabel", "fit_one_vs_rest", "knn_map", "linear_probe_map",
           "mean_ap", "multi_label_classes"]


def multi_label_classes(manifest) -> int | None:
    """The number of classes when the dataset is multi-label (its samples carry labels, not a
    class), else None."""
    annotations = (manifest.stats or {}).get("annotations") or {}
    return len(manifest.classes) if annotations.get("multi_label") else None


def mean_ap(targets: torch.Tensor, scores: torch.Tensor) -> float:
    """mAP over the classes with a positive among ``targets`` (0/1 [N, C])."""
    ap = average_precision(targets.numpy() > 0.5, scores.float().numpy())
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0


@torch.no_grad()
def knn_map(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
            test_y: torch.Tensor, *, k: int = 20, temperature: float = 0.07,
            chunk: int = 1024) -> float:
    """mAP of DINO's weighted k-NN with multi-hot votes."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    k = min(k, len(train_x))
    scores = []
    for i in range(0, len(test_x), chunk):
        sim, idx = (test_x[i : i + chunk] @ train_x.T).topk(k, dim=1)
        # relative to the nearest: exp of large sim / T would overflow
        weights = ((sim - sim[:, :1]) / temperature).exp()
        votes = (weights[:, :, None] * train_y.float()[idx]).sum(dim=1)
        scores.append(votes / weights.sum(dim=1, keepdim=True))
    return mean_ap(test_y, torch.cat(scores))


def fit_one_vs_rest(x: torch.Tensor, y: torch.Tensor, *, l2: float | None = None,
                    max_iter: int = 200) -> torch.nn.Linear:
    """One logistic regression per class of ``y`` (0/1 [N, C]): mean binary cross-entropy +
    ``l2`` * |w_c|^2 / 2 each, on standardised features (``l2`` None: 1 / N, scikit-learn's
    C = 1). The returned layer includes the standardisation and gives logits."""
    y = y.double()
    return fit_standardised_linear(
        x, y.shape[1],
        lambda logits: F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y),
        l2=l2, max_iter=max_iter)


@torch.no_grad()
def linear_probe_map(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, *, l2: float | None = None) -> float:
    """mAP of a one-vs-rest logistic-regression probe fitted on (train_x, train_y)."""
    with torch.enable_grad():
        layer = fit_one_vs_rest(train_x, train_y, l2=l2)
    return mean_ap(test_y, torch.sigmoid(layer(test_x.float())))


def few_shot_multilabel(targets: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Sorted indices: ``shots`` images drawn per class (by ``seed``) among those showing it.

    Raises:
        ValueError: a class shows in fewer than ``shots`` images.
    """
    gen = torch.Generator().manual_seed(seed)
    picked: set[int] = set()
    for c in range(targets.shape[1]):
        members = torch.nonzero(targets[:, c] > 0.5).flatten()
        if len(members) < shots:
            raise ValueError(f"class {c} shows in {len(members)} images, fewer than {shots} "
                             "shots")
        picked.update(members[torch.randperm(len(members), generator=gen)[:shots]].tolist())
    return torch.tensor(sorted(picked))
