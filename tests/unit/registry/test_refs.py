from __future__ import annotations

import pytest

from hypernym.errors import HypernymError
from hypernym.registry.models import ModelRef, parse_ref
from hypernym.tracking import flatten


@pytest.mark.parametrize("ref,expected", [
    ("bb", ModelRef("bb")),
    ("bb@candidate", ModelRef("bb", alias="candidate")),
    ("bb/3", ModelRef("bb", version=3)),
    ("models:/bb@prod", ModelRef("bb", alias="prod")),
    ("models:/my-model_2/12", ModelRef("my-model_2", version=12)),
])
def test_reference_forms(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "a/b/c", "bb@", "bb/x", "bb@a@b", "s3://x"])
def test_bad_references_list_the_forms(ref):
    with pytest.raises(HypernymError, match="NAME@alias"):
        parse_ref(ref)


def test_flatten_nests_truncates_and_drops_secrets():
    flat = flatten({"optim": {"lr": 0.1}, "aws_secret_access_key": "x", "s3": {"token": "t"},
                    "long": "y" * 10_000, "empty": {}})
    assert flat["optim.lr"] == "0.1"
    assert not any("secret" in k or "token" in k for k in flat)
    assert len(flat["long"]) == 6000 and flat["empty"] == "{}"
