"""Losses and their metrics: softmax cross-entropy (timm's) and the 21K-P semantic softmax.

The semantic softmax (Ridnik et al. 2021, "ImageNet-21K Pretraining for the Masses") keeps one
output per class, as a flat classifier does, but splits the logits by semantic level (see
hypernym.taxonomy.hierarchy) and runs one softmax per level. A sample of class ``c`` has a target
at every level of its semantic path (``c`` itself at its own level, each ancestor that is a class
at the levels above). The level losses are summed with the 21K-P weights: level ``l`` gets
``N_0 / N_l``, clamped to 20, where ``N_l`` counts the classes at level ``l`` or deeper, so the deep
levels, which few samples reach, are not drowned out by the top ones. As in the 21K-P code, only
levels holding more than one class get a softmax, and label smoothing is applied per level. (The
21K-P code also never builds a softmax for its deepest level; here every level with more than
one class has one.)

Targets may be class indices or soft (B x classes) rows, as timm's Mixup produces: the loss sums
a row's mass onto each class's path, so mixup and cutmix work with both losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from hypernym.errors import HypernymError
from hypernym.taxonomy import semantic_paths

__all__ = ["CrossEntropy", "SemanticSoftmax", "build_loss", "level_accuracy"]

MAX_LEVEL_WEIGHT = 20.0  # the 21K-P code's max_normalization_factor


class CrossEntropy:
    """Softmax cross-entropy with label smoothing; soft targets use timm's SoftTargetCrossEntropy
    (timm's Mixup has already smoothed them)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing
        self._soft = SoftTargetCrossEntropy()

    def to(self, device: torch.device) -> CrossEntropy:
        return self

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2:
            return self._soft(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class SemanticSoftmax:
    """One softmax per semantic level over the dataset's classes.

    Attributes:
        levels: the hierarchy level of each softmax.
        members: per softmax, the class indices it covers (logit columns).
        targets: (classes x softmaxes) the column, within each softmax, of a class's ancestor at
            that level, or -1 where the class has none.
        weights: per softmax, the 21K-P level weight.
    """

    def __init__(self, class_ids: Sequence[str], class_paths: Mapping[str, list[str]], *,
                 label_smoothing: float = 0.0) -> None:
        index = {c: i for i, c in enumerate(class_ids)}
        paths = semantic_paths({c: class_paths[c] for c in class_ids})
        depth = torch.tensor([len(paths[c]) - 1 for c in class_ids])
        counts = torch.bincount(depth)
        self.levels = [level for level, n in enumerate(counts.tolist()) if n > 1]
        if len(self.levels) < 2:
            raise HypernymError(
                "the semantic softmax needs a class hierarchy with classes nested under other "
                f"classes; this dataset's {len(class_ids)} classes have "
                f"{len(self.levels)} level(s) with more than one class. Use train.loss: ce, or "
                "prepare the data with a hierarchy (WordNet ids, or prepare's `hierarchy` file)")
        self.members = [torch.nonzero(depth == level).flatten() for level in self.levels]
        self.targets = torch.full((len(class_ids), len(self.levels)), -1, dtype=torch.long)
        for k, (level, members) in enumerate(zip(self.levels, self.members, strict=True)):
            column = {int(m): j for j, m in enumerate(members)}
            for c in class_ids:
                if len(paths[c]) > level:
                    self.targets[index[c], k] = column[index[paths[c][level]]]
        at_or_below = torch.tensor([float(counts[level:].sum()) for level in self.levels])
        self.weights = (counts.sum() / at_or_below).clamp(max=MAX_LEVEL_WEIGHT)
        self.label_smoothing = label_smoothing

    @classmethod
    def from_manifest(cls, manifest, *, label_smoothing: float = 0.0) -> SemanticSoftmax:
        hierarchy = manifest.hierarchy or {}
        if "class_paths" not in hierarchy:
            raise HypernymError(f"dataset {manifest.name!r} has no class hierarchy in its "
                                "manifest: prepare it again, or use train.loss: ce")
        return cls([c.id for c in manifest.classes], hierarchy["class_paths"],
                   label_smoothing=label_smoothing)

    def to(self, device: torch.device) -> SemanticSoftmax:
        self.members = [m.to(device) for m in self.members]
        self.targets, self.weights = self.targets.to(device), self.weights.to(device)
        return self

    def level_targets(self, target: torch.Tensor, k: int) -> torch.Tensor:
        """(B x members of softmax k) target mass: each class's row mass moved to its ancestor."""
        if target.dim() == 1:
            target = F.one_hot(target, len(self.targets)).float()
        has = self.targets[:, k] >= 0
        out = target.new_zeros(target.shape[0], len(self.members[k]))
        return out.index_add_(1, self.targets[has, k], target[:, has])

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        total = logits.new_zeros(())
        for k, members in enumerate(self.members):
            level_target = self.level_targets(target, k)
            mass = level_target.sum(dim=1, keepdim=True)  # 0 for samples with no target here
            eps = self.label_smoothing
            level_target = level_target * (1 - eps) + mass * (eps / len(members))
            log_p = F.log_softmax(logits[:, members], dim=1)
            total = total + self.weights[k] * -(level_target * log_p).sum(dim=1).mean()
        return total

    @torch.no_grad()
    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(softmaxes x 2): per level, samples predicted right and samples with a target."""
        rows = []
        for k, members in enumerate(self.members):
            target = self.targets[labels, k]
            valid = target >= 0
            pred = logits[:, members].argmax(dim=1)
            rows.append(torch.stack([(pred == target)[valid].sum(), valid.sum()]))
        return torch.stack(rows).double()


def build_loss(kind: str, manifest, *, label_smoothing: float) -> CrossEntropy | SemanticSoftmax:
    """The recipe's loss (``train.loss``: ``ce`` or ``semantic``) for a dataset.

    Raises:
        HypernymError: ``semantic`` for a dataset whose classes form no hierarchy.
    """
    if kind == "semantic":
        return SemanticSoftmax.from_manifest(manifest, label_smoothing=label_smoothing)
    return CrossEntropy(label_smoothing)


def level_accuracy(manifest, loss, device: torch.device) -> SemanticSoftmax | None:
    """What evaluation uses for per-level (semantic) accuracy: the loss itself when it is the
    semantic softmax, otherwise one built whenever the classes form a hierarchy (None when
    they do not)."""
    if isinstance(loss, SemanticSoftmax):
        return loss
    try:
        return SemanticSoftmax.from_manifest(manifest).to(device)
    except HypernymError:
        return None
