"""Contamination check: which evaluation images also appear in the pretraining data.

Exact copies are found by a hash of the encoded bytes, near copies (resized, re-encoded, cropped
by a few percent) by 256-bit DCT hashes compared with the Hamming distance (see phash.py for
both hashes and why).

How it scales: the evaluation split is the small side (50,000 images for ImageNet-1K val). Its
hashes are computed first, one Ray task per shard, and held in memory: 8 + 10 x 32 bytes per
image, 16 MB for 50,000. Then one Ray task per pretraining shard decodes and hashes that shard's
images and compares them with the evaluation hashes right away, returning only the matches. The
11 M images of 21K-P are thus streamed once and never indexed, so no index has to fit anywhere;
holding them would take 11.06 M x 328 bytes = 3.6 GB (or 0.44 GB for the exact hash and the
full-image hash alone).

A pair is a near duplicate when its distance over the 256 bits is at most ``threshold``,
minimised over the crop hypotheses (the evaluation image's full hash against the pretraining
image's full and 9 crop hashes, and the other way round). The first 64-bit word (the lowest
frequencies) prefilters pairs before the full distance is computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from hypernym.errors import HypernymError
from hypernym.transfer import phash

__all__ = ["ContaminationResult", "Hashes", "check_contamination", "hash_images", "hash_shard",
           "lineage_dataset", "log_contamination", "match"]

THRESHOLD = 60  # of 256 bits; planted copies measured <= 40, distinct images >= 82 (docs)
PREFILTER = 20  # of the 64 lowest-frequency bits
_CHUNK = 256  # evaluation images compared at once (memory: chunk x shard x 19 bytes)


@dataclass
class Hashes:
    """The hashes of a set of images, row by row."""

    keys: list[str]  # SHARD/SAMPLE_KEY
    labels: np.ndarray  # int64 class index
    exact: np.ndarray  # uint64
    near: np.ndarray  # (n, HYPOTHESES, WORDS) uint64

    @classmethod
    def concat(cls, parts: Iterable[Hashes]) -> Hashes:
        parts = list(parts)
        return cls([k for p in parts for k in p.keys],
                   np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.exact for p in parts]),
                   np.concatenate([p.near for p in parts]))


@dataclass
class ContaminationResult:
    """What was found: counts over evaluation images, and every matching pair."""

    dataset: str
    against: str
    checked: int
    against_images: int
    exact: int  # evaluation images with a byte-identical copy
    near: int  # evaluation images with a near copy and no exact one
    matches: list[dict] = field(default_factory=list)  # query, against, kind, distance, labels
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"against": self.against, "checked": self.checked, "exact": self.exact,
                "near": self.near, "against_images": self.against_images}


def hash_images(samples: Iterable[tuple[str, bytes, int]]) -> Hashes:
    """Hashes of (key, encoded image, label) samples."""
    keys, labels, exact, grids = [], [], [], []
    for key, data, label in samples:
        keys.append(key)
        labels.append(label)
        exact.append(phash.exact_hash(data))
        grids.append(phash.grey_grid(data))
    near = (phash.perceptual_hashes(np.stack(grids)) if grids else
            np.zeros((0, phash.HYPOTHESES, phash.WORDS), np.uint64))
    return Hashes(keys, np.asarray(labels, np.int64), np.asarray(exact, np.uint64), near)


def hash_shard(url: str) -> Hashes:
    """Hashes of every sample of one shard (a Ray task); keys are ``SHARD/SAMPLE_KEY``."""
    return hash_images(_shard_samples(url))


def _shard_samples(url: str):
    """(SHARD/key, jpg, label) per sample of a prepared shard, in tar order."""
    from hypernym.data.storage import open_fs
    from hypernym.data.tar import TarFormatError, iter_tar

    name = url.rsplit("/", 1)[-1]
    fs, path = open_fs(url)
    key, fields = None, {}
    try:
        with fs.open(path, "rb", block_size=1 << 22) as fh:
            for member, data in itertools.chain(iter_tar(fh, name=url), [("", b"")]):  # sentinel
                base, _, ext = member.partition(".")
                if base != key:
                    if "jpg" in fields and "cls" in fields:
                        yield f"{name}/{key}", fields["jpg"], int(fields["cls"])
                    key, fields = base, {}
                fields[ext] = data
    except TarFormatError as exc:
        raise HypernymError(f"shard {exc}; prepare the dataset again") from None


def match(query: Hashes, index: Hashes, *, threshold: int = THRESHOLD,
          prefilter: int = PREFILTER) -> list[dict]:
    """Every (query, index) pair that is an exact or a near duplicate; exact pairs are not
    reported again as near."""
    out = []
    where = {}
    for i, h in enumerate(query.exact.tolist()):
        where.setdefault(h, []).append(i)
    exact_pairs = set()
    for j, h in enumerate(index.exact.tolist()):
        for i in where.get(h, ()):
            exact_pairs.add((i, j))
            out.append(_pair(query, index, i, j, "exact", 0))
    if not len(index.keys):
        return out
    # Each pair is tried under 19 alignments: the query's full hash against the index image's
    # full and crop hashes (a = 0..9), and the query's crop hashes against the index image's
    # full hash (a = 10..18).
    full_q, full_i = query.near[:, 0], index.near[:, 0]
    for start in range(0, len(query.keys), _CHUNK):
        q = query.near[start : start + _CHUNK]
        coarse = np.concatenate([
            np.bitwise_count(q[:, None, None, 0, 0] ^ index.near[None, :, :, 0]),
            np.bitwise_count(q[:, None, 1:, 0] ^ full_i[None, :, None, 0])], axis=2)
        qi, ji, hi = np.nonzero(coarse <= prefilter)
        if not len(qi):
            continue
        qi = qi + start
        lhs = np.where((hi < phash.HYPOTHESES)[:, None], full_q[qi],
                       query.near[qi, np.maximum(hi - phash.HYPOTHESES + 1, 0)])
        rhs = np.where((hi < phash.HYPOTHESES)[:, None],
                       index.near[ji, np.minimum(hi, phash.HYPOTHESES - 1)], full_i[ji])
        dist = np.bitwise_count(lhs ^ rhs).sum(axis=-1, dtype=np.int32)
        best: dict[tuple[int, int], int] = {}
        for i, j, d in zip(qi.tolist(), ji.tolist(), dist.tolist(), strict=True):
            if d <= threshold and d < best.get((i, j), threshold + 1):
                best[(i, j)] = d
        out.extend(_pair(query, index, i, j, "near", d) for (i, j), d in sorted(best.items())
                   if (i, j) not in exact_pairs)
    return out


def _pair(query: Hashes, index: Hashes, i: int, j: int, kind: str, distance: int) -> dict:
    return {"query": query.keys[i], "query_label": int(query.labels[i]),
            "against": index.keys[j], "against_label": int(index.labels[j]), "kind": kind,
            "distance": int(distance)}


def _match_shard(url: str, query: Hashes, threshold: int, prefilter: int):
    index = hash_shard(url)
    return match(query, index, threshold=threshold, prefilter=prefilter), len(index.keys)


def check_contamination(dataset: str, against: str, *, splits: Iterable[str] = ("val",),
                        against_splits: Iterable[str] | None = None, threshold: int = THRESHOLD,
                        prefilter: int = PREFILTER) -> ContaminationResult:
    """Find the images of ``dataset``'s ``splits`` that also appear in ``against`` (every split
    unless ``against_splits`` is given), as Ray tasks over the shards of both.

    Raises:
        HypernymError: a dataset is missing or a split is empty.
    """
    import time

    import ray

    from hypernym.data.manifest import read_manifest
    from hypernym.runtime import ensure_ray

    manifest, other = read_manifest(dataset), read_manifest(against)
    splits = list(splits)
    urls = [u for s in splits for u in manifest.shard_urls(dataset, s)]
    if not urls:
        raise HypernymError(f"{dataset} has no shards in split(s) {splits}; its splits: "
                            f"{', '.join(manifest.splits)}")
    against_splits = list(against_splits or other.splits)
    against_urls = [u for s in against_splits for u in other.shard_urls(against, s)]
    if not against_urls:
        raise HypernymError(f"{against} has no shards in split(s) {against_splits}")
    ensure_ray()
    started = time.perf_counter()  # the work, not Ray's start-up
    hash_task = ray.remote(num_cpus=1)(hash_shard)
    query = Hashes.concat(ray.get([hash_task.remote(u) for u in urls]))
    query_ref = ray.put(query)
    match_task = ray.remote(num_cpus=1)(_match_shard)
    results = ray.get([match_task.remote(u, query_ref, threshold, prefilter)
                       for u in against_urls])
    matches = sorted((m for found, _ in results for m in found),
                     key=lambda m: (m["kind"] != "exact", m["distance"], m["query"]))
    exact = {m["query"] for m in matches if m["kind"] == "exact"}
    near = {m["query"] for m in matches} - exact
    return ContaminationResult(
        dataset=dataset, against=against, checked=len(query.keys),
        against_images=sum(n for _, n in results), exact=len(exact), near=len(near),
        matches=matches, seconds=time.perf_counter() - started)


def lineage_dataset(backbone_ref: str, *, settings=None) -> str:
    """The pretraining dataset of a registered backbone, from its training run's lineage: the
    run's ``hypernym.dataset_fingerprint`` tag and the dataset input it logged (whose source
    names the URI). The dataset found there must still have that fingerprint.

    Raises:
        HypernymError: the run logged no dataset, or the dataset changed since.
    """
    import json

    from hypernym.data.manifest import read_manifest
    from hypernym.registry.models import resolve
    from hypernym.tracking import run_summary

    version = resolve(backbone_ref, settings=settings)
    if not version.run_id:
        raise HypernymError(f"{backbone_ref} has no training run in the registry: pass the "
                            "pretraining dataset with --against")
    run = run_summary(version.run_id, settings=settings)
    fingerprint = run.tags.get("hypernym.dataset_fingerprint")
    for ds in run.datasets:
        try:
            source = json.loads(ds.source)
        except (TypeError, ValueError):
            continue
        if ds.context in (None, "train") and source.get("fingerprint") == fingerprint:
            uri = source["uri"]
            found = read_manifest(uri).fingerprint
            if found != fingerprint:
                raise HypernymError(
                    f"{backbone_ref} was trained on {uri} with fingerprint {fingerprint[:12]}, "
                    f"but that dataset now has {found[:12]}: it was prepared again since; pass "
                    "the dataset it was trained on with --against")
            return uri
    raise HypernymError(f"the training run {version.run_id} of {backbone_ref} logged no dataset "
                        "with its fingerprint tag: pass the pretraining dataset with --against")


def log_contamination(result: ContaminationResult, run_id: str, *, examples: int = 20,
                      settings=None) -> None:
    """Counts as ``contamination/*`` metrics, the first ``examples`` matches as a table, all
    matches as JSON."""
    from hypernym import tracking

    tracking.log_run_metrics(run_id, {"contamination/checked": result.checked,
                                      "contamination/exact": result.exact,
                                      "contamination/near": result.near,
                                      "contamination/against_images": result.against_images},
                             settings=settings)
    tracking.set_run_tags(run_id, {"hypernym.contamination_against": result.against},
                          settings=settings)
    shown = result.matches[:examples]
    if shown:
        tracking.log_run_table(run_id, {k: [m[k] for m in shown] for k in shown[0]},
                               "contamination/examples.json", settings=settings)
    tracking.log_run_dict(run_id, {**result.summary(), "matches": result.matches},
                          "contamination/matches.json", settings=settings)
