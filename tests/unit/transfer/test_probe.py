"""The probes' arithmetic: DINO's weighted k-NN, the L-BFGS logistic regression (against
scikit-learn's), few-shot draws and pooled features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from hypernym.transfer.probe import (
    extract_features,
    few_shot_indices,
    fit_logistic_regression,
    knn_accuracy,
    linear_probe_accuracy,
)


def unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], dim=1)


def test_knn_weights_votes_by_similarity_not_count():
    # one class-0 neighbour very close, two class-1 neighbours farther: 2 against 1 by count,
    # but exp(sim / 0.07) makes the close one outweigh them
    train = unit(5, 60, 62) * torch.tensor([[1.0], [3.0], [0.5]])  # norms do not matter
    labels = torch.tensor([0, 1, 1])
    test, truth = unit(0), torch.tensor([0])
    assert knn_accuracy(train, labels, test, truth, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train, labels, test, truth, k=3, temperature=100.0) == 0.0  # ~ counts
    assert knn_accuracy(train, labels, test, truth, k=1) == 1.0
    assert knn_accuracy(train, labels, unit(61, 59), torch.tensor([1, 1]), k=20) == 1.0


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=gen) * 2
    y = torch.arange(4).repeat_interleave(10)
    x = centres[y] + torch.randn(40, 16, generator=gen) * 3 + 5  # offset: standardisation
    layer = fit_logistic_regression(x, y)
    z = ((x - x.mean(0)) / x.std(0)).double().numpy()
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(z, y.numpy())
    mine = torch.softmax(layer(x), 1).detach().numpy()
    assert np.abs(mine - ref.predict_proba(z)).max() < 1e-3
    test = centres[y] + torch.randn(40, 16, generator=gen) * 3 + 5
    expected = float((ref.predict(((test - x.mean(0)) / x.std(0)).double().numpy())
                      == y.numpy()).mean())
    assert linear_probe_accuracy(x, y, test, y) == pytest.approx(expected)


def test_few_shot_draws():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)
    picked = few_shot_indices(labels, 3, seed=0)
    assert torch.bincount(labels[picked]).tolist() == [3, 3, 3]
    assert picked.tolist() == sorted(set(picked.tolist()))
    assert torch.equal(picked, few_shot_indices(labels, 3, seed=0))
    assert not torch.equal(picked, few_shot_indices(labels, 3, seed=1))
    with pytest.raises(ValueError, match="class 1 has 5 samples, fewer than 6"):
        few_shot_indices(labels, 6, seed=0)


def test_features_are_the_pooled_pre_logits():
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=2)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    feats = extract_features(model, images, mean=mean, std=std, batch_size=5)
    with torch.no_grad():
        x = (images.float() / 255 - 0.5) / 0.25
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (12, model.num_features)
    assert torch.allclose(feats, expected, atol=1e-4)
