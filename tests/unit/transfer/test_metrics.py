"""The report's metric functions against figures computed by hand on a tiny case."""

from __future__ import annotations

import numpy as np
import pytest

from hypernym.transfer import metrics as M

# 6 samples, 3 classes. Predictions (argmax): 0, 1, 1, 1, 2, 0
LABELS = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array([
    [0.70, 0.20, 0.10],  # right, confidence 0.70
    [0.30, 0.60, 0.10],  # wrong (0 -> 1), 0.60
    [0.05, 0.90, 0.05],  # right, 0.90
    [0.10, 0.80, 0.10],  # right, 0.80
    [0.20, 0.30, 0.50],  # right, 0.50
    [0.55, 0.40, 0.05],  # wrong (2 -> 0), 0.55; label 2 is third: outside top-2
])


def test_topk():
    assert M.topk_accuracy(LABELS, PROBS, 1) == pytest.approx(4 / 6)
    # top-2: sample 1 (0 in {1, 0}) yes; sample 5 (2 in {0, 1}) no
    assert M.topk_accuracy(LABELS, PROBS, 2) == pytest.approx(5 / 6)
    assert M.topk_accuracy(LABELS, PROBS, 5) == 1.0  # k capped at the class count


def test_per_class_and_averages():
    out = M.classification_metrics(LABELS, PROBS.argmax(1), 3)
    pc = out["per_class"]
    # class 0: predicted for samples 0 and 5, right once -> P 1/2; 2 samples, 1 found -> R 1/2
    # class 1: predicted for 1, 2, 3, right twice -> P 2/3; R 2/2
    # class 2: predicted for 4 only, right -> P 1; R 1/2
    np.testing.assert_allclose(pc["precision"], [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(pc["recall"], [1 / 2, 1.0, 1 / 2])
    f1 = [2 * p * r / (p + r) for p, r in zip([1 / 2, 2 / 3, 1], [1 / 2, 1, 1 / 2], strict=True)]
    np.testing.assert_allclose(pc["f1"], f1)  # 0.5, 0.8, 2/3
    assert pc["support"].tolist() == [2, 2, 2]
    assert out["macro"]["f1"] == pytest.approx(sum(f1) / 3)
    assert out["weighted"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)  # equal support
    assert out["confusion"].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_weighted_average_uses_support():
    labels, preds = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    out = M.classification_metrics(labels, preds, 2)
    # recall: class 0 2/3 (3 samples), class 1 1/1 (1 sample) -> weighted (3*2/3 + 1) / 4 = 0.75
    assert out["weighted"]["recall"] == pytest.approx(0.75)
    assert out["macro"]["recall"] == pytest.approx((2 / 3 + 1) / 2)


def test_expected_calibration_error_by_hand():
    conf = PROBS.max(1)  # 0.70 0.60 0.90 0.80 0.50 0.55
    correct = PROBS.argmax(1) == LABELS  # T F T T T F
    out = M.calibration(conf, correct, bins=15)
    # bins of width 1/15: 0.50 -> bin 7 (0.4667, 0.5333]; 0.55 and 0.60 -> bin 8 (0.5333, 0.6];
    # 0.70 -> bin 10; 0.80 -> bin 11 (0.7333, 0.8]; 0.90 -> bin 13 (0.8667, 0.9333]
    assert out["count"].tolist() == [0] * 7 + [1, 2, 0, 1, 1, 0, 1, 0]
    ece = (1 / 6) * abs(1 - 0.50) + (2 / 6) * abs(0 - 0.575) + (1 / 6) * abs(1 - 0.70) \
        + (1 / 6) * abs(1 - 0.80) + (1 / 6) * abs(1 - 0.90)
    assert out["ece"] == pytest.approx(ece)  # 0.3833
    assert np.isnan(out["accuracy"][0]) and out["accuracy"][8] == 0.0
    # edges: a confidence of exactly 1 is in the last bin, 0 in the first
    edge = M.calibration(np.array([0.0, 1.0]), np.array([False, True]), bins=15)
    assert edge["count"][0] == 1 and edge["count"][-1] == 1 and edge["ece"] == 0.0


def test_confused_pairs():
    cm = np.array([[5, 3, 0], [1, 4, 3], [0, 2, 6]])
    assert M.confused_pairs(cm, 3) == [(0, 1, 3), (1, 2, 3), (2, 1, 2)]
    assert M.confused_pairs(np.eye(3, dtype=int)) == []


def test_level_accuracy_shares_the_ancestor_at_each_depth():
    paths = {
        "chihuahua": ["entity", "animal", "dog", "chihuahua"],
        "pug": ["entity", "animal", "dog", "pug"],
        "tabby": ["entity", "animal", "cat", "tabby"],
        "car": ["entity", "car"],
    }
    ids = list(paths)
    labels = np.array([0, 0, 1, 2, 3])
    preds = np.array([0, 1, 2, 3, 0])  # right; dog for dog; cat for dog; car for cat; dog for car
    out = M.level_accuracy(labels, preds, ids, paths)
    # depth 0 (entity) is shared by all: starts at 1. depth 1: animal/animal, animal/animal,
    # animal/animal, animal/car (wrong), car/animal (wrong) -> 3/5
    # depth 2 (car has none: 4 samples): dog/dog, dog/dog, dog/cat, cat/"" -> 2/4
    # depth 3: chihuahua/chihuahua, chihuahua/pug, pug/tabby, tabby/"" -> 1/4
    assert list(out) == [1, 2, 3]
    assert out[1] == {"accuracy": pytest.approx(3 / 5), "samples": 5}
    assert out[2] == {"accuracy": pytest.approx(2 / 4), "samples": 4}
    assert out[3] == {"accuracy": pytest.approx(1 / 4), "samples": 4}


def test_mean_std_over_seeds():
    assert M.mean_std([0.9]) == "0.900"
    assert M.mean_std([0.9, 0.8, 0.7]) == "0.800 ± 0.082"  # population std: sqrt(0.02 / 3)
