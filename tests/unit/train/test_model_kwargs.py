"""`model.kwargs` checked in the driver on PyTorch's meta device (hypernym.train.build)."""

from __future__ import annotations

import pytest

from hypernym.errors import HypernymError
from hypernym.train.build import TaskSpec, check_model_kwargs


def spec(**kwargs) -> TaskSpec:
    return TaskSpec(arch="resnet10t", num_classes=10, backbone_ref=None, settings=None,
                    model_kwargs=kwargs)


def test_a_keyword_the_model_does_not_take_is_named():
    with pytest.raises(HypernymError, match=r"model.kwargs: .*'no_such_arg'"):
        check_model_kwargs(spec(no_such_arg=1))


def test_keywords_the_model_takes_pass():
    check_model_kwargs(spec(drop_path_rate=0.1, in_chans=1))
    check_model_kwargs(spec())


def test_a_wrong_value_is_left_to_the_workers():
    # not a missing keyword: the meta build's other failures are not the driver's to judge
    check_model_kwargs(spec(in_chans="three"))
