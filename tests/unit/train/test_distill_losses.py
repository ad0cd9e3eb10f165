"""The distillation losses against hand computations: Hinton's KL, MIIL's semantic KD (by hand on
a two-level tree, and against a per-sample transcription of its definition on a bigger one), the
per-level KL, and the densified soft labels of a store."""

from __future__ import annotations

import math

import pytest
import torch

from hypernym.train.distill.codec import StoreTarget, densify
from hypernym.train.distill.losses import (
    DistillLoss,
    kl_loss,
    semantic_kd_loss,
    semantic_kl_loss,
    teacher_confidence,
)
from hypernym.train.distill.store_format import level_layout
from hypernym.train.losses import SemanticSoftmax

from .test_losses import CLASSES, full_path


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_kl_by_hand():
    student = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]
    teacher = [[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]]
    for temperature in (1.0, 2.0, 4.0):
        expected = 0.0
        for s, t in zip(student, teacher, strict=True):
            p_s = softmax([v / temperature for v in s])
            p_t = softmax([v / temperature for v in t])
            expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
        expected = expected / 2 * temperature ** 2
        got = kl_loss(torch.tensor(student), torch.tensor(teacher), temperature)
        assert got.item() == pytest.approx(expected, rel=1e-5)
    # log-probabilities of the teacher give the same loss as its logits
    logp = torch.log_softmax(torch.tensor(teacher), dim=1)
    assert kl_loss(torch.tensor(student), logp, 2.0).item() == pytest.approx(
        kl_loss(torch.tensor(student), torch.tensor(teacher), 2.0).item(), rel=1e-6)
    same = kl_loss(torch.tensor(teacher), torch.tensor(teacher))
    assert same.item() == pytest.approx(0, abs=1e-6)


# Two levels of two classes: A and B at the top, a1 and a2 under A.
TWO = ["A", "B", "a1", "a2"]
TWO_PATHS = {"A": ["A"], "B": ["B"], "a1": ["A", "a1"], "a2": ["A", "a2"]}


def test_semantic_kd_by_hand():
    levels = SemanticSoftmax(TWO, TWO_PATHS)
    assert [m.tolist() for m in levels.members] == [[0, 1], [2, 3]]
    # level 0: student (0, 0) -> (1/2, 1/2); teacher (ln 3, 0) -> (3/4, 1/4)
    # level 1: student (0, ln 3) -> (1/4, 3/4); teacher (0, 0) -> (1/2, 1/2)
    student = torch.tensor([[0.0, 0.0, 0.0, math.log(3)]])
    teacher = torch.tensor([[math.log(3), 0.0, 0.0, 0.0]])
    # squared errors (1/4^2 + 1/4^2) = 1/8 per level; confidence: the top ceil(2/20) = 1
    # probability of the teacher: 3/4 at level 0, 1/2 at level 1
    expected = 1 / 8 * 3 / 4 + 1 / 8 * 1 / 2
    assert semantic_kd_loss(student, teacher, levels).item() == pytest.approx(expected)
    # a confidence kept apart (a store's) is used as given
    conf = torch.tensor([[1.0, 2.0]])
    assert semantic_kd_loss(student, teacher, levels, conf).item() == pytest.approx(
        1 / 8 * 1 + 1 / 8 * 2)
    # summed over the batch, not averaged: two copies of the sample count twice
    assert semantic_kd_loss(student.repeat(2, 1), teacher.repeat(2, 1), levels).item() == \
        pytest.approx(2 * expected)


def miil_reference(student, teacher, levels_members):
    """MIIL's semantic KD written out from its definition: per level, per sample, per class."""
    total = 0.0
    for members in levels_members:
        top = math.ceil(len(members) / 20)
        for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
            p_s = softmax([s_row[i] for i in members])
            p_t = softmax([t_row[i] for i in members])
            confidence = sum(sorted(p_t, reverse=True)[:top])
            total += sum((a - b) ** 2 * confidence for a, b in zip(p_s, p_t, strict=True))
    return total


def test_semantic_kd_against_the_definition_on_a_tree():
    levels = SemanticSoftmax(CLASSES, {c: full_path(c) for c in CLASSES})
    members = [m.tolist() for m in levels.members]
    assert len(members) >= 2
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(5, len(CLASSES), generator=gen) * 3
    teacher = torch.randn(5, len(CLASSES), generator=gen) * 3
    assert semantic_kd_loss(student, teacher, levels).item() == pytest.approx(
        miil_reference(student, teacher, members), rel=1e-5)
    # a big level: the confidence sums the top ceil(45 / 20) = 3 probabilities
    probs = torch.softmax(torch.randn(2, 45, generator=gen), dim=1)
    assert torch.allclose(teacher_confidence(probs), probs.sort(dim=1, descending=True)
                          .values[:, :3].sum(dim=1))


def test_semantic_kl_by_hand():
    levels = SemanticSoftmax(TWO, TWO_PATHS)
    # weights: N_0 / N_l: 4 classes in all; level 0 has 4 at or below, level 1 has 2
    assert levels.weights.tolist() == [1.0, 2.0]
    student = torch.tensor([[0.0, 0.0, 0.0, math.log(3)]])
    teacher = torch.tensor([[math.log(3), 0.0, 0.0, 0.0]])
    level0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    level1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert semantic_kl_loss(student, teacher, levels).item() == pytest.approx(
        1.0 * level0 + 2.0 * level1, rel=1e-5)
    loss = DistillLoss("semantic_kl", temperature=2.0, levels=levels)
    assert loss(student, teacher).item() == pytest.approx(
        sum(w * kl_loss(student[:, m], teacher[:, m], 2.0).item()
            for w, m in zip(levels.weights.tolist(), levels.members, strict=True)), rel=1e-6)


def test_densify_spreads_the_rest_over_each_levels_other_classes():
    # one flat level of 5 classes, top-2 kept
    level_of, tail = level_layout([[0, 1, 2, 3, 4]], [2], 5)
    target = StoreTarget(torch.tensor([1]), torch.tensor([[3, 0]]),
                         torch.tensor([[0.5, 0.2]], dtype=torch.float16),
                         torch.tensor([[0.3]], dtype=torch.float16),
                         torch.zeros(1, 0, dtype=torch.float16), torch.tensor([-1]))
    dense = densify(target, level_of, tail)
    assert dense.tolist()[0] == pytest.approx([0.2, 0.1, 0.1, 0.5, 0.1], abs=1e-3)
    # two semantic levels (a class in no level gets 0), each distribution sums to 1
    level_of, tail = level_layout([[0, 1], [2, 3, 4]], [1, 1], 6)
    target = StoreTarget(torch.tensor([0]), torch.tensor([[1, 4]]),
                         torch.tensor([[0.9, 0.6]], dtype=torch.float16),
                         torch.tensor([[0.1, 0.4]], dtype=torch.float16),
                         torch.zeros(1, 2, dtype=torch.float16), torch.tensor([-1]))
    dense = densify(target, level_of, tail)[0]
    assert dense.tolist() == pytest.approx([0.1, 0.9, 0.2, 0.2, 0.6, 0.0], abs=1e-3)
