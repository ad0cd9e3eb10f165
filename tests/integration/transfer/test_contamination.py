"""The contamination check on real shards: planted copies (exact, resized, re-encoded at another
quality, cropped by 5%) among 2,000 distinct images, found by Ray tasks over the shards."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from tests.integration.transfer.planted import KINDS, make_sources

pytestmark = pytest.mark.integration

PRETRAIN, DISTINCT, PER_KIND = 1200, 800, 40  # 2,000 distinct images, 160 planted copies


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, ray_local):
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("contamination")
    truth = make_sources(root, pretrain=PRETRAIN, distinct=DISTINCT, planted_per_kind=PER_KIND)
    for name in ("pretrain", "eval"):
        # resize "none": the copies keep their own sizes; every image is re-encoded (quality 90)
        prepare(parse_recipe({
            "kind": "prepare", "source": str(root / name), "output": str(root / f"{name}-ds"),
            "val_per_class": 0 if name == "pretrain" else 10, "min_per_class": 0,
            "resize": "none", "shard_samples": 300}), show_progress=False)
    return root, truth


def test_planted_copies_found_without_false_positives(datasets):
    from hypernym.transfer.contamination import check_contamination

    root, truth = datasets
    result = check_contamination(str(root / "eval-ds"), str(root / "pretrain-ds"),
                                 splits=("train", "val"))
    assert result.checked == DISTINCT + PER_KIND * len(KINDS)
    assert result.against_images == PRETRAIN

    found: dict[str, set] = {}
    for m in result.matches:
        stem = m["query"].rsplit("/", 1)[-1].split("_", 1)[1]  # SHARD/<class>_<file stem>
        found.setdefault(stem, set()).add((m["kind"], m["against"].rsplit("_", 1)[-1]))
    false = sorted(s for s in found if not truth[s])
    assert not false, f"distinct images matched: {false[:5]}"
    for kind in KINDS:
        planted = [s for s, k in truth.items() if k == kind]
        hits = [s for s in planted if f"p{s[len(kind):]}" in {a for _, a in found.get(s, ())}]
        recall = len(hits) / len(planted)
        print(f"{kind}: recall {recall:.3f} ({len(hits)}/{len(planted)})")
        assert recall >= 0.95, f"{kind}: recall {recall:.3f}"
        assert all({k for k, _ in found[s]} == ({"exact"} if kind == "exact" else {"near"})
                   for s in hits)
    # precision over every reported pair: each names the copy's own source image
    wrong = [m for m in result.matches
             if f"p{m['query'].rsplit('/', 1)[-1].split('_', 1)[1][-5:]}"
             != m["against"].rsplit("_", 1)[-1]]
    assert not wrong, wrong[:3]
    assert result.exact == PER_KIND and result.near == PER_KIND * (len(KINDS) - 1)
