"""The ILSVRC-2012 source on miniatures of both layouts: the archives as downloaded (train tar
of synset tars, val tar, devkit .tar.gz with meta.mat), and the extracted one (train/ tars,
val/ images, devkit folder with a text mapping); and the errors for a missing or mismatched
devkit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypernym.config import parse_recipe
from hypernym.data.prepare import plan_splits
from hypernym.data.sources import detect_format, list_source, read_item
from hypernym.data.storage import open_fs
from hypernym.errors import HypernymError
from tests.tars import tar_bytes

# ILSVRC2012_ID -> synset, as in the real devkit (1: tench, 2: goldfish, 3: great white shark)
CLASSES = {1: "n01440764", 2: "n01443537", 3: "n01484850"}
VAL_LABELS = [2, 1, 3, 3, 1, 2, 2]  # ground truth of val images 1..7


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def synset_tars() -> dict[str, bytes]:
    return {f"{w}.tar": tar_bytes({f"{w}_{i}.JPEG": jpeg(c * 10 + i) for i in range(1, 5)})
            for c, w in CLASSES.items()}


def val_images() -> dict[str, bytes]:
    return {f"ILSVRC2012_val_{n:08d}.JPEG": jpeg(1000 + n) for n in range(1, 8)}


def meta_mat() -> bytes:
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(i, w, f"class {i}", 0) for i, w in CLASSES.items()]
    rows.append((4, "n01473806", "bony fish", 2))  # an inner node: not a class
    out = io.BytesIO()
    savemat(out, {"synsets": np.array(rows, dtype=dtype)})
    return out.getvalue()


GT = "data/ILSVRC2012_validation_ground_truth.txt"


def archives(root: Path, *, labels=VAL_LABELS) -> Path:
    root.mkdir(parents=True)
    (root / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes(synset_tars()))
    (root / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(val_images()))
    devkit = {f"ILSVRC2012_devkit_t12/{GT}": "\n".join(map(str, labels)).encode() + b"\n",
              "ILSVRC2012_devkit_t12/data/meta.mat": meta_mat()}
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(tar_bytes(devkit, mode="w:gz"))
    return root


def extracted(root: Path) -> Path:
    for name, data in synset_tars().items():
        (root / "train").mkdir(parents=True, exist_ok=True)
        (root / "train" / name).write_bytes(data)
    for name, data in val_images().items():
        (root / "val").mkdir(exist_ok=True)
        (root / "val" / name).write_bytes(data)
    (root / "ILSVRC2012_devkit_t12" / "data").mkdir(parents=True)
    (root / "ILSVRC2012_devkit_t12" / GT).write_text("\n".join(map(str, VAL_LABELS)))
    (root / "ILSVRC2012_devkit_t12" / "data" / "meta.txt").write_text(
        "".join(f"{i} {w}\n" for i, w in CLASSES.items()))
    return root


@pytest.mark.parametrize("layout", [archives, extracted])
def test_both_layouts_list_train_and_the_official_val(tmp_path, layout):
    root = layout(tmp_path / "ilsvrc")
    assert detect_format(str(root)) == "ilsvrc2012"
    listing = list_source(str(root))
    assert sorted(listing.items) == sorted(CLASSES.values())
    assert all(len(v) == 4 for v in listing.items.values())
    val = {item.key: class_id for class_id, items in listing.val.items() for item in items}
    assert val == {f"val_{n:08d}": CLASSES[label] for n, label in enumerate(VAL_LABELS, 1)}

    # bytes read in place (from inside the train tar's synset tars too) are the originals
    fs, _ = open_fs(str(root))
    item = sorted(listing.items["n01443537"], key=lambda i: i.key)[2]
    assert read_item(fs, item, {}) == jpeg(2 * 10 + 3)
    [val3] = [i for i in listing.val["n01484850"] if i.key == "val_00000003"]
    assert read_item(fs, val3, {}) == jpeg(1003)

    # the plan keeps the official val split whole; val_per_class does not apply
    recipe = parse_recipe({"kind": "prepare", "source": str(root), "output": str(tmp_path / "o"),
                           "min_per_class": 0, "val_per_class": 50})
    classes, shards, dropped = plan_splits(listing, recipe)
    assert classes == sorted(CLASSES.values()) and not dropped
    assert sorted(i.key for s in shards["val"] for i in s) == sorted(val)
    assert sum(len(s) for s in shards["train"]) == 12


def test_devkit_elsewhere_and_errors(tmp_path):
    root = archives(tmp_path / "a")
    kit = tmp_path / "kit.tar.gz"
    (root / "ILSVRC2012_devkit_t12.tar.gz").rename(kit)
    with pytest.raises(HypernymError, match="need the devkit.*ILSVRC2012_devkit_t12.tar.gz"):
        list_source(str(root), "ilsvrc2012")
    assert len(list_source(str(root), "ilsvrc2012", devkit=str(kit)).val) == 3
    with pytest.raises(HypernymError, match="does not exist"):
        list_source(str(root), "ilsvrc2012", devkit=str(tmp_path / "nope"))

    # a ground truth with an index the metadata does not have (another release's numbering)
    bad = archives(tmp_path / "b", labels=[2, 1, 3, 3, 1, 2, 999])
    with pytest.raises(HypernymError, match=r"class indices \[999\].*different releases"):
        list_source(str(bad))
    # fewer ground-truth lines than validation images
    short = archives(tmp_path / "c", labels=[2, 1, 3])
    with pytest.raises(HypernymError, match="validation image 4 has no line"):
        list_source(str(short))
    # a devkit folder without metadata
    ext = extracted(tmp_path / "d")
    (ext / "ILSVRC2012_devkit_t12" / "data" / "meta.txt").unlink()
    with pytest.raises(HypernymError, match="neither data/meta.mat nor data/meta.txt"):
        list_source(str(ext))
