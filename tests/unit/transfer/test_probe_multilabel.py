"""The probes on multi-label data: one-vs-rest logistic regression against scikit-learn's, the
k-NN's multi-hot votes, and few-shot draws per class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypernym.transfer.probe_multilabel import (
    few_shot_multilabel,
    fit_one_vs_rest,
    knn_map,
    linear_probe_map,
    mean_ap,
)


def data(seed: int, n: int = 60):
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 3, generator=gen) < 0.4).float()
    directions = torch.randn(3, 12, generator=gen) * 2
    x = y @ directions + torch.randn(n, 12, generator=gen) * 2 + 4  # offset: standardisation
    return x, y


def test_one_vs_rest_is_scikit_learns_logistic_regression_per_class():
    from sklearn.linear_model import LogisticRegression

    x, y = data(0)
    layer = fit_one_vs_rest(x, y)
    z = ((x - x.mean(0)) / x.std(0)).double().numpy()
    with torch.no_grad():
        mine = torch.sigmoid(layer(x)).numpy()
    for c in range(3):
        ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(z, y[:, c].numpy())
        assert np.abs(mine[:, c] - ref.predict_proba(z)[:, 1]).max() < 1e-3


def test_probes_score_map_far_above_chance():
    x, y = data(1, 200)
    test_x, test_y = x[100:], y[100:]
    chance = mean_ap(test_y, torch.rand(len(test_y), 3))
    assert linear_probe_map(x[:100], y[:100], test_x, test_y) > max(0.8, chance + 0.3)
    assert knn_map(x[:100], y[:100], test_x, test_y, k=10) > chance + 0.2


def test_knn_votes_with_the_neighbours_labels():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    test = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.2]])
    truth = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # classes 0 and 2: the positive ranks first (AP 1); class 1: its positive, the third
    # image, is a little nearer the second neighbour than the first image is: second (AP 1/2)
    assert knn_map(train, labels, test, truth, k=2) == pytest.approx((1 + 0.5 + 1) / 3)


def test_few_shot_draws_per_class():
    y = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 0], [0, 1]]).float()
    picked = few_shot_multilabel(y, 2, seed=0)
    assert picked.tolist() == sorted(set(picked.tolist()))
    assert all(y[picked, c].sum() >= 2 for c in range(2))
    assert torch.equal(picked, few_shot_multilabel(y, 2, seed=0))
    with pytest.raises(ValueError, match="class 0 shows in 3 images, fewer than 4"):
        few_shot_multilabel(y, 4, seed=0)
