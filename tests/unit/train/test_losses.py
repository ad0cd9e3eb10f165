"""The semantic softmax against a direct transcription of the 21K-P definition, and its soft-target
(mixup) behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hypernym.errors import HypernymError
from hypernym.taxonomy import semantic_paths
from hypernym.train.losses import CrossEntropy, SemanticSoftmax

# A small tree. Classes (the dataset's) are upper case; "thing" and "mammal" are inner nodes that
# are not classes, so the semantic paths skip them.
PARENTS = {"ANIMAL": "thing", "PLANT": "thing", "mammal": "ANIMAL", "DOG": "mammal",
           "CAT": "mammal", "BIRD": "ANIMAL", "PUG": "DOG", "BEAGLE": "DOG", "TABBY": "CAT",
           "OAK": "PLANT", "FERN": "PLANT", "ROCK": "thing", "thing": None}
CLASSES = ["PUG", "ANIMAL", "OAK", "DOG", "CAT", "BEAGLE", "PLANT", "BIRD", "TABBY", "FERN",
           "ROCK"]


def full_path(node):
    path = [node]
    while PARENTS[path[0]] is not None:
        path.insert(0, PARENTS[path[0]])
    return path


@pytest.fixture
def semantic():
    return SemanticSoftmax(CLASSES, {c: full_path(c) for c in CLASSES}, label_smoothing=0.1)


def reference_loss(logits, labels, eps):
    """The 21K-P loss written out per sample: per level with >1 class, a smoothed CE over that
    level's classes where the sample has a target (0 elsewhere), mean over the batch, weighted by
    min(N_0 / N_level_or_deeper, 20)."""
    paths = semantic_paths({c: full_path(c) for c in CLASSES})
    depth = {c: len(p) - 1 for c, p in paths.items()}
    levels = sorted({d for d in depth.values() if list(depth.values()).count(d) > 1})
    total = 0.0
    for level in levels:
        members = [i for i, c in enumerate(CLASSES) if depth[c] == level]
        weight = min(len(CLASSES) / sum(1 for d in depth.values() if d >= level), 20.0)
        per_sample = []
        for row, label in zip(logits, labels, strict=True):
            path = paths[CLASSES[label]]
            if len(path) <= level:
                per_sample.append(torch.tensor(0.0))
                continue
            j = members.index(CLASSES.index(path[level]))
            target = torch.full((len(members),), eps / len(members))
            target[j] += 1 - eps
            per_sample.append(-(target * F.log_softmax(row[members], dim=0)).sum())
        total += weight * torch.stack(per_sample).mean()
    return total


def test_levels_and_weights(semantic):
    # depth 0: ANIMAL PLANT ROCK; 1: DOG CAT BIRD OAK FERN; 2: PUG BEAGLE TABBY
    assert semantic.levels == [0, 1, 2]
    assert [sorted(CLASSES[i] for i in m) for m in semantic.members] == [
        ["ANIMAL", "PLANT", "ROCK"], ["BIRD", "CAT", "DOG", "FERN", "OAK"],
        ["BEAGLE", "PUG", "TABBY"]]
    assert torch.allclose(semantic.weights, torch.tensor([1.0, 11 / 8, 11 / 3]))
    pug = CLASSES.index("PUG")
    members = semantic.members
    assert [CLASSES[members[k][semantic.targets[pug, k]]] for k in range(3)] == [
        "ANIMAL", "DOG", "PUG"]
    assert semantic.targets[CLASSES.index("ROCK")].tolist()[1:] == [-1, -1]


def test_matches_the_21k_p_definition(semantic):
    torch.manual_seed(0)
    logits = torch.randn(16, len(CLASSES))
    labels = torch.randint(0, len(CLASSES), (16,))
    assert torch.allclose(semantic(logits, labels), reference_loss(logits, labels, 0.1),
                          atol=1e-5)


def test_soft_targets_are_linear_so_mixup_works(semantic):
    torch.manual_seed(1)
    logits = torch.randn(8, len(CLASSES))
    a, b = torch.randint(0, len(CLASSES), (8,)), torch.randint(0, len(CLASSES), (8,))
    one_hot = F.one_hot(a, len(CLASSES)).float()
    assert torch.allclose(semantic(logits, one_hot), semantic(logits, a), atol=1e-6)
    lam = 0.3
    mixed = lam * one_hot + (1 - lam) * F.one_hot(b, len(CLASSES)).float()
    expected = lam * semantic(logits, a) + (1 - lam) * semantic(logits, b)
    assert torch.allclose(semantic(logits, mixed), expected, atol=1e-5)


def test_accuracy_counts(semantic):
    labels = torch.tensor([CLASSES.index("PUG"), CLASSES.index("ROCK")])
    logits = torch.full((2, len(CLASSES)), -5.0)
    for name in ("ANIMAL", "DOG", "BEAGLE"):  # right, right, wrong for the pug
        logits[0, CLASSES.index(name)] = 5.0
    logits[1, CLASSES.index("PLANT")] = 5.0  # wrong for the rock
    counts = semantic.correct(logits, labels)
    assert counts.tolist() == [[1, 2], [1, 1], [0, 1]]


def test_flat_hierarchy_is_refused():
    classes = ["a", "b", "c"]
    with pytest.raises(HypernymError, match="train.loss: ce"):
        SemanticSoftmax(classes, {c: ["root", c] for c in classes})


def test_cross_entropy_hard_and_soft():
    logits = torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    loss = CrossEntropy(0.0)
    assert torch.allclose(loss(logits, labels), loss(logits, F.one_hot(labels, 5).float()))


def test_classification_refuses_a_multi_label_dataset():
    from hypernym.data.dataset import Dataset
    from hypernym.data.manifest import ClassInfo, Manifest
    from hypernym.train.tasks import ClassificationTask
    from tests.unit.train.helpers import unit_recipe

    classes = [ClassInfo(index=i, id=f"c{i}", name=f"c{i}") for i in range(3)]
    manifest = Manifest(name="scenes", recipe={}, classes=classes, splits={}, fingerprint="-",
                        stats={"annotations": {"multi_label": True}})
    with pytest.raises(HypernymError, match="several labels per image.*task: multilabel"):
        ClassificationTask.from_recipe(unit_recipe(), Dataset("/d", manifest))
