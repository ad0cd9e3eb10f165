"""Distillation losses: what the student's logits are pulled towards, given the teacher's.

Every loss takes the student's logits and the teacher's *log-probabilities* (or logits: the
losses only use them through softmaxes, which ignore a constant per row, and a per-level softmax
of global log-probabilities is the level's softmax of the logits). An offline teacher store keeps
probabilities, so replaying it hands the losses their logarithm; an online teacher hands its
logits. Three losses (``train.distill.loss``):

- ``kl``: Hinton et al. 2015. ``T² · KL(softmax(t/T) || softmax(s/T))``, averaged over the batch;
  the T² keeps the gradient's scale independent of the temperature.
- ``semantic``: the semantic KD of Ridnik et al. 2021 ("ImageNet-21K Pretraining for the
  Masses"; ``calculate_KD_loss`` in their code), exactly: per semantic level, the softmax of
  the student and of the teacher over the level's classes (temperature 1), the squared error of
  the two probability vectors, each sample's row weighted by the teacher's confidence at that
  level (the sum of its top ``ceil(n_level / 20)`` probabilities, the top 5%), summed over
  classes, samples and levels. Note the sum over the batch (not a mean), as there.
- ``semantic_kl``: per semantic level, ``T² · KL`` between the level's softmaxes, averaged over
  the batch, and summed with the semantic softmax's level weights (``min(N_0 / N_l, 20)``,
  `hypernym.train.losses.SemanticSoftmax`).

The levels are the semantic softmax's (`SemanticSoftmax.members`): every level holding more
than one class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hypernym.train.losses import SemanticSoftmax

__all__ = ["KD_LOSSES", "DistillLoss", "kl_loss", "semantic_kd_loss", "semantic_kl_loss",
           "teacher_confidence"]

KD_LOSSES = ("kl", "semantic", "semantic_kl")


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton's distillation loss: ``T² · KL(p_t || p_s)`` at temperature ``T``, batch mean.

    Args:
        student: (B x C) logits.
        teacher: (B x C) logits or log-probabilities.
    """
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    # F.kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature ** 2


def teacher_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(B) the sum of each row's top ``ceil(n / 20)`` probabilities (the top 5% of the n
    classes): MIIL's ``estimate_teacher_confidence``."""
    top = math.ceil(probs.shape[1] / 20)
    return probs.topk(top, dim=1).values.sum(dim=1)


def semantic_kd_loss(student: torch.Tensor, teacher: torch.Tensor, levels: SemanticSoftmax,
                     confidence: torch.Tensor | None = None) -> torch.Tensor:
    """MIIL's semantic KD loss (see the module docstring), summed over classes, batch and
    levels.

    Args:
        student: (B x C) logits.
        teacher: (B x C) logits or log-probabilities.
        levels: the dataset's semantic softmax (its levels' member columns).
        confidence: (B x levels) the teacher's confidence per level, when it was kept apart
            (a teacher store's top-K probabilities cannot give the top 5% of a big level);
            computed from ``teacher`` when None.
    """
    total = student.new_zeros((), dtype=torch.float32)
    for k, members in enumerate(levels.members):
        p_s = F.softmax(student[:, members].float(), dim=1)
        p_t = F.softmax(teacher[:, members].float(), dim=1)
        weight = teacher_confidence(p_t) if confidence is None else confidence[:, k].float()
        total = total + ((p_s - p_t) ** 2 * weight.detach()[:, None]).sum()
    return total


def semantic_kl_loss(student: torch.Tensor, teacher: torch.Tensor, levels: SemanticSoftmax,
                     temperature: float = 1.0) -> torch.Tensor:
    """``sum_l w_l · T² · KL(p_t,l || p_s,l)`` over the semantic levels, batch mean, with the
    semantic softmax's level weights ``w_l``."""
    total = student.new_zeros((), dtype=torch.float32)
    for k, members in enumerate(levels.members):
        total = total + levels.weights[k] * kl_loss(student[:, members], teacher[:, members],
                                                    temperature)
    return total


class DistillLoss:
    """The recipe's distillation loss (``train.distill.loss``) as one callable.

    Args:
        kind: ``kl``, ``semantic`` or ``semantic_kl``.
        temperature: for ``kl`` and ``semantic_kl`` (``semantic`` is defined at 1).
        levels: the semantic softmax of the dataset, for the semantic losses.
    """

    def __init__(self, kind: str, *, temperature: float = 1.0,
                 levels: SemanticSoftmax | None = None) -> None:
        assert kind in KD_LOSSES, kind
        assert kind == "kl" or levels is not None, "the semantic losses need the levels"
        self.kind, self.temperature, self.levels = kind, temperature, levels

    def to(self, device: torch.device) -> DistillLoss:
        if self.levels is not None:
            self.levels = self.levels.to(device)
        return self

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor,
                 confidence: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "kl":
            return kl_loss(student, teacher, self.temperature)
        if self.kind == "semantic":
            return semantic_kd_loss(student, teacher, self.levels, confidence)
        return semantic_kl_loss(student, teacher, self.levels, self.temperature)
