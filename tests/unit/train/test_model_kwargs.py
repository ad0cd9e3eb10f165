"""`model.kwargs` checked in the driver on PyTorch's meta device (hypernym.train.model)."""

from __future__ import annotations

import pytest
import torch

from hypernym.config import parse_recipe
from hypernym.errors import HypernymError
from hypernym.train.model import build_classifier, check_model_kwargs


def recipe(**kwargs):
    return parse_recipe({"kind": "pretrain", "name": "t", "data": {"path": "unused"},
                         "model": {"arch": "resnet10t", "kwargs": kwargs}})


def test_a_keyword_the_model_does_not_take_is_named():
    with pytest.raises(HypernymError, match=r"model.kwargs: .*'no_such_arg'"):
        check_model_kwargs(recipe(no_such_arg=1), num_outputs=10, backbone=None)


def test_keywords_the_model_takes_pass_and_reach_the_model():
    check_model_kwargs(recipe(drop_path_rate=0.1, in_chans=1), num_outputs=10, backbone=None)
    check_model_kwargs(recipe(), num_outputs=10, backbone=None)
    model = build_classifier(recipe(in_chans=1), num_outputs=10).model
    assert model.conv1[0].in_channels == 1 and model.get_classifier().out_features == 10
    assert model.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_a_wrong_value_is_left_to_the_workers():
    # not a missing keyword: the meta build's other failures are not the driver's to judge
    assert check_model_kwargs(recipe(in_chans="three"), num_outputs=10, backbone=None) is None
    with pytest.raises(TypeError):  # the real build fails on the worker, where it is reported
        build_classifier(recipe(in_chans="three"), num_outputs=10)


def test_a_backbone_run_is_not_checked_here():
    # a fine-tune's kwargs go to the registered model's load, on the workers
    assert check_model_kwargs(recipe(no_such_arg=1), num_outputs=10, backbone="bb/1") is None
