"""The recipe's rules on real Ray: table sources, subtree exclusion, duplicates, class mixing,
truncated tars, class-size filtering."""

from __future__ import annotations

import json
import shutil

import pytest

from hypernym.data.prepare import prepare
from hypernym.errors import HypernymError
from tests.tars import add_member

from .conftest import SYNSETS, jpeg, make_winter21
from .conftest import small_recipe as recipe

pytestmark = pytest.mark.integration


def test_csv_and_jsonl_sources(tmp_path, ray_local):
    images = tmp_path / "imgs"
    images.mkdir()
    rows = []
    for i in range(12):
        (images / f"im{i}.jpg").write_bytes(jpeg(i))
        rows.append({"path": f"imgs/im{i}.jpg", "label": ["cat", "dog", "eel"][i % 3]})
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(
        f"{r['path']},{r['label']}\n" for r in rows))
    (tmp_path / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for table in ("list.csv", "list.jsonl"):
        manifest = prepare(recipe(tmp_path / table, tmp_path / f"out-{table}"),
                           show_progress=False)
        assert [c.id for c in manifest.classes] == ["cat", "dog", "eel"]
        assert manifest.num_samples("train") == 9 and manifest.num_samples("val") == 3
    (tmp_path / "bad.csv").write_text("file,class\nx.jpg,a\n")
    with pytest.raises(HypernymError, match="needs 'path' and 'label'"):
        prepare(recipe(tmp_path / "bad.csv", tmp_path / "o"), show_progress=False)


def test_exclude_subtree_drop_small_and_dedupe(tmp_path, ray_local):
    src = make_winter21(tmp_path / "raw", per_class=8)
    # a duplicate: the first image of the first class again, inside the last class's tar
    import tarfile

    with tarfile.open(src / f"{SYNSETS[-1]}.tar", "a") as tar:
        add_member(tar, f"{SYNSETS[-1]}_dup.JPEG", jpeg(0))
    dog = "n02084071"  # the first two synsets are dog breeds
    manifest = prepare(recipe(src, tmp_path / "out", exclude_subtrees=[dog], dedupe=True),
                       show_progress=False)
    assert [c.id for c in manifest.classes] == SYNSETS[2:]
    assert manifest.dropped["excluded_subtree_classes"] == 2
    assert manifest.dropped["excluded_subtree_images"] == 16
    assert "duplicate_images" not in manifest.dropped  # its twin was excluded with the dogs
    manifest = prepare(recipe(src, tmp_path / "out2", dedupe=True), show_progress=False)
    assert manifest.dropped["duplicate_images"] == 1
    assert manifest.num_samples("train") + manifest.num_samples("val") == 8 * len(SYNSETS)
    # min_per_class counts what is left after dedupe: every class has 8 < 9 now
    with pytest.raises(HypernymError, match="every class was dropped"):
        prepare(recipe(src, tmp_path / "out3", dedupe=True, min_per_class=9),
                show_progress=False)
    manifest = prepare(recipe(src, tmp_path / "out4", min_per_class=9), show_progress=False)
    assert [c.id for c in manifest.classes] == [SYNSETS[-1]]
    assert manifest.dropped["class_too_small"] == 4


def test_classes_are_mixed_in_every_shard(tmp_path, ray_local):
    src = make_winter21(tmp_path / "raw", per_class=20)
    manifest = prepare(recipe(src, tmp_path / "out"), show_progress=False)
    mixing = manifest.stats["mixing"]["train"]
    # one-tar-per-class input written in order would give tv ~0.8 (1 of 5 classes per shard)
    assert mixing["tv_mean"] < 0.5 and mixing["classes_per_shard"] >= 3.5


def test_truncated_tar_keeps_what_it_can_and_is_counted(tmp_path, ray_local):
    src = make_winter21(tmp_path / "raw", per_class=10)
    tar_path = src / f"{SYNSETS[0]}.tar"
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: len(data) // 2])  # cut mid-member
    manifest = prepare(recipe(src, tmp_path / "out", max_bad_fraction=0.5),
                       show_progress=False)
    assert manifest.dropped["skipped_truncated_tar"] == 1
    kept = manifest.num_samples("train") + manifest.num_samples("val")
    assert 40 < kept < 50  # the other four classes whole, some of the cut one
    shutil.rmtree(tmp_path / "out")


def test_user_given_hierarchy_for_a_folder_dataset(tmp_path, ray_local):
    from PIL import Image

    for c in ("tabby", "beagle"):
        (tmp_path / "raw" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 40, 10, 10)).save(tmp_path / "raw" / c / f"{i}.jpg")
    tree = tmp_path / "tree.yaml"
    tree.write_text("tabby: cat\nbeagle: dog\ncat: pet\ndog: pet\n")
    manifest = prepare(recipe(tmp_path / "raw", tmp_path / "out", hierarchy=str(tree)),
                       show_progress=False)
    assert manifest.hierarchy["kind"] == "custom"
    assert manifest.hierarchy["class_paths"]["tabby"] == ["pet", "cat", "tabby"]
    tree.write_text("tabby: cat\n")
    with pytest.raises(HypernymError, match="no parent for classes"):
        prepare(recipe(tmp_path / "raw", tmp_path / "out2", hierarchy=str(tree)),
                show_progress=False)
    assert not (tmp_path / "out2" / "train-000000.tar").exists()  # failed before any work
