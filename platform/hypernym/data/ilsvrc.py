"""The official ILSVRC-2012 (ImageNet-1K) release as a prepare source.

Layout of ``source`` (as downloaded from image-net.org, each part archived or extracted):

- train: ``ILSVRC2012_img_train.tar`` (one ``nXXXXXXXX.tar`` per synset inside, read in place),
  or a ``train/`` folder of those tars, or of ``nXXXXXXXX/`` folders;
- val: ``ILSVRC2012_img_val.tar`` or a ``val/`` folder of the flat
  ``ILSVRC2012_val_XXXXXXXX.JPEG`` files (numbered from 1);
- the devkit, for the validation labels: ``ILSVRC2012_devkit_t12.tar.gz`` or its extracted
  ``ILSVRC2012_devkit_t12/`` folder (or the recipe's ``devkit``). Its
  ``data/ILSVRC2012_validation_ground_truth.txt`` gives, line N, the ILSVRC class index (1-1000)
  of validation image N, and ``data/meta.mat`` maps those indices to synset ids. Instead of
  ``meta.mat``, ``data/meta.txt`` with lines ``ILSVRC2012_ID WNID`` works too.

The official validation images become the ``val`` split as they are (``val_per_class`` does not
apply). torchvision's ``ImageNet`` dataset reads the same files, but extracts the archives to a
local disk first; here everything is read in place, from local paths or s3://.
"""

from __future__ import annotations

import io
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor

from hypernym.data.listing import Item, list_folder, list_tar, sample_key
from hypernym.data.storage import join, open_fs
from hypernym.errors import HypernymError

__all__ = ["list_ilsvrc", "read_devkit"]

TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
_SYNSET = re.compile(r"^n\d{8}$")
_HELP = ("get ILSVRC2012_devkit_t12.tar.gz from image-net.org (the 2012 development kit) and put "
         "it, or its extracted folder, in the source directory, or set the recipe's devkit")


def read_devkit(devkit: str) -> tuple[dict[int, str], list[int]]:
    """({ILSVRC2012_ID: synset id} of the 1,000 classes, validation labels in image order).

    ``devkit``: the devkit's folder or ``.tar.gz``.

    Raises:
        HypernymError: the devkit or one of its two files is missing or not the 2012 devkit's.
    """
    files = _devkit_files(devkit)
    if "data/meta.mat" in files:
        ids = _from_meta_mat(files["data/meta.mat"], devkit)
    elif "data/meta.txt" in files:
        ids = _from_text(files["data/meta.txt"], devkit)
    else:
        raise HypernymError(f"{devkit} has neither data/meta.mat nor data/meta.txt: not the "
                            f"ILSVRC-2012 devkit; {_HELP}")
    if GROUND_TRUTH not in files:
        raise HypernymError(f"{devkit} has no {GROUND_TRUTH}; {_HELP}")
    try:
        labels = [int(line) for line in files[GROUND_TRUTH].decode().split()]
    except ValueError:
        raise HypernymError(f"{devkit}/{GROUND_TRUTH}: expected one class index per line") \
            from None
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        raise HypernymError(f"{devkit}: the ground truth uses class indices {unknown[:5]} that "
                            "the devkit's metadata does not map to a synset: the two files come "
                            "from different releases (2012 numbers the classes 1-1000)")
    return ids, labels


def _devkit_files(devkit: str) -> dict[str, bytes]:
    wanted = ("data/meta.mat", "data/meta.txt", GROUND_TRUTH)
    fs, path = open_fs(devkit)
    if fs.isdir(path):
        return {w: fs.cat_file(join(path, w)) for w in wanted if fs.exists(join(path, w))}
    if not fs.isfile(path):
        raise HypernymError(f"ILSVRC-2012 devkit {devkit} does not exist; {_HELP}")
    out = {}
    try:
        with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:*") as tar:
            for member in tar:
                name = next((w for w in wanted if member.name.endswith(w)), None)
                if name and member.isfile():
                    out[name] = tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise HypernymError(f"{devkit} is not a readable devkit archive ({exc}); {_HELP}") \
            from None
    return out


def _from_meta_mat(data: bytes, devkit: str) -> dict[int, str]:
    try:
        from scipy.io import loadmat  # scipy comes with scikit-learn
    except ImportError:
        raise HypernymError(f"{devkit}: reading data/meta.mat needs scipy (pip install scipy), "
                            "or write data/meta.txt with lines `ILSVRC2012_ID WNID`") from None
    try:
        synsets = loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        rows = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                if int(s["num_children"]) == 0}  # leaves are the classes; inner nodes follow
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise HypernymError(f"{devkit}/data/meta.mat is not the ILSVRC-2012 metadata (a "
                            f"'synsets' struct with ILSVRC2012_ID, WNID, num_children): {exc}") \
            from None
    return _checked(rows, devkit, "data/meta.mat")


def _from_text(data: bytes, devkit: str) -> dict[int, str]:
    rows = {}
    for n, line in enumerate(data.decode().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise HypernymError(f"{devkit}/data/meta.txt line {n}: expected `ILSVRC2012_ID WNID`"
                                f", got {line!r}")
        rows[int(parts[0])] = parts[1]
    return _checked(rows, devkit, "data/meta.txt")


def _checked(rows: dict[int, str], devkit: str, name: str) -> dict[int, str]:
    bad = [w for w in rows.values() if not _SYNSET.match(w)]
    if not rows or bad:
        raise HypernymError(f"{devkit}/{name}: expected synset ids (nXXXXXXXX), got "
                            f"{bad[:3] or 'no classes'}")
    return rows


def list_ilsvrc(uri: str, devkit: str | None, *, threads: int = 8):
    """(train items by class, val items by class, skipped counts) of an ILSVRC-2012 source."""
    from collections import Counter

    fs, path = open_fs(uri)
    names = {e.rstrip("/").rsplit("/", 1)[-1]: e for e in fs.ls(path, detail=False)}
    train: dict[str, list[Item]] = {}
    skipped: Counter = Counter()
    if TRAIN_TAR in names:
        tars = _inner_tars(fs, names[TRAIN_TAR])
        jobs = lambda t: list_tar(fs, names[TRAIN_TAR], start=t[1], name=t[0])  # noqa: E731
    elif "train" in names and fs.isdir(names["train"]):
        entries = sorted(fs.ls(names["train"], detail=False))
        tars = [e for e in entries if e.endswith(".tar")]
        jobs = lambda t: list_tar(fs, t)  # noqa: E731
        for folder in (e for e in entries if fs.isdir(e)):
            class_id, items, bad = list_folder(fs, folder)
            train[class_id] = items
            skipped.update(bad)
    else:
        raise HypernymError(f"{uri}: no {TRAIN_TAR} and no train/ folder (ILSVRC-2012 layout: "
                            f"{TRAIN_TAR} or train/nXXXXXXXX.tar, {VAL_TAR} or val/, and the "
                            "devkit)")
    with ThreadPoolExecutor(threads) as pool:  # I/O bound: many small header reads
        for class_id, items, bad in pool.map(jobs, tars):
            train[class_id] = items
            skipped.update(bad)
    val_files = _val_files(fs, names, uri)
    devkit = devkit or next((names[n] for n in (f"{DEVKIT}.tar.gz", DEVKIT) if n in names),
                            None)
    if devkit is None:
        raise HypernymError(f"{uri}: the validation labels need the devkit; {_HELP}")
    if "://" in uri and "://" not in devkit:
        devkit = f"{uri.split('://', 1)[0]}://{devkit}"
    ids, labels = read_devkit(devkit)
    val: dict[str, list[Item]] = {}
    for number, item in val_files:
        if number > len(labels):
            raise HypernymError(f"validation image {number} has no line in the devkit's ground "
                                f"truth ({len(labels)} lines): the devkit does not match these "
                                "images")
        wnid = ids[labels[number - 1]]
        val.setdefault(wnid, []).append(Item(wnid, sample_key(f"val_{number:08d}"), *item,
                                            name=f"ILSVRC2012_val_{number:08d}"))
    strangers = sorted(set(val) - set(train))
    if strangers:
        raise HypernymError(f"the devkit maps validation images to synsets {strangers[:5]} that "
                            "have no training images: the devkit and the images come from "
                            "different releases")
    return train, val, skipped


def _inner_tars(fs, outer: str) -> list[tuple[str, int]]:
    """(synset tar name, data offset) of each tar inside the train archive."""
    with fs.open(outer, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
        return [(m.name.rsplit("/", 1)[-1], m.offset_data) for m in tar
                if m.isfile() and m.name.endswith(".tar")]


def _val_files(fs, names: dict[str, str], uri: str) -> list[tuple[int, tuple]]:
    """(image number, (source, offset, size)) of every validation image."""
    found = []
    if VAL_TAR in names:
        with fs.open(names[VAL_TAR], "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            for m in tar:
                match = _VAL_NAME.search(m.name)
                if m.isfile() and match and m.size:
                    found.append((int(match[1]), (names[VAL_TAR], m.offset_data, m.size)))
    elif "val" in names and fs.isdir(names["val"]):
        for info in fs.ls(names["val"], detail=True):
            match = _VAL_NAME.search(info["name"])
            if info["type"] == "file" and match and info.get("size", 1):
                found.append((int(match[1]), (info["name"],)))
    else:
        raise HypernymError(f"{uri}: no {VAL_TAR} and no val/ folder of "
                            "ILSVRC2012_val_XXXXXXXX.JPEG files")
    if not found:
        raise HypernymError(f"{uri}: the validation set holds no ILSVRC2012_val_XXXXXXXX.JPEG")
    return sorted(found)
