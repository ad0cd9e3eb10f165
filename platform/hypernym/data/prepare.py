"""`prepare`: raw images -> WebDataset shards + manifest.json, as Ray tasks.

The plan (which image goes to which split and shard) is a seeded, deterministic function computed
in the driver; each shard is then one Ray task. Classes are mixed in every shard by a global
shuffle, though the source is one tar per class. A rerun after a crash keeps the shards already
finished (same work, same sha256: checked inside each task); the manifest is written last.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter

from hypernym.config import PrepareRecipe
from hypernym.data.annotated import annotation_summary, is_multi_label
from hypernym.data.filters import drop_duplicates, exclude_subtrees
from hypernym.data.manifest import (
    MANIFEST,
    TIMM_INFO,
    ClassInfo,
    Manifest,
    fingerprint,
    write_manifest,
    write_timm_info,
)
from hypernym.data.shards import PARTS_DIR, ShardAnnotations, ShardResult, write_shard
from hypernym.data.sources import Item, Listing, list_source
from hypernym.data.storage import join, open_fs
from hypernym.errors import HypernymError
from hypernym.preflight import check_cluster, prepare_locations
from hypernym.progress import ProgressBar
from hypernym.settings import get_settings

__all__ = ["RECIPE_NAME", "RECIPE_VERSION", "mixing", "plan_splits", "prepare", "shard_tasks"]

RECIPE_NAME, RECIPE_VERSION = "hypernym-prepare", 1


def plan_splits(
    listing: Listing, recipe: PrepareRecipe
) -> tuple[list[str], dict[str, list[list[Item]]], Counter]:
    """Decide classes, splits and shards. Pure: same listing and recipe, same plan.

    A source with a class vocabulary of its own (``listing.classes``: VOC, COCO, multi-label
    tables) keeps every image: its items are grouped by label only to hold out validation
    images, and ``min_per_class`` does not apply.

    Returns:
        (kept class ids in index order, {split: [shard items, ...]}, dropped counts by reason).
    """
    if listing.classes is not None:
        return list(listing.classes), _cut(_vocabulary_splits(listing, recipe), recipe), Counter()
    dropped: Counter = Counter()
    kept: dict[str, list[Item]] = {}
    held_out = 0 if listing.val else recipe.val_per_class  # a source's own val split is kept
    for class_id in sorted(listing.items):
        items = sorted(listing.items[class_id], key=lambda i: i.key)
        if len(items) < max(recipe.min_per_class, held_out + 1):
            dropped["class_too_small"] += 1
            dropped["images_in_dropped_classes"] += len(items)
            continue
        kept[class_id] = items
    if not kept:
        raise HypernymError(
            f"every class was dropped: none has at least max(min_per_class={recipe.min_per_class},"
            f" val_per_class+1={recipe.val_per_class + 1}) images; lower those settings"
        )
    rng = random.Random(recipe.seed)
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    for class_id, items in kept.items():
        held = set(rng.sample(range(len(items)), held_out))
        for i, item in enumerate(items):
            splits["val" if i in held else "train"].append(item)
        splits["val"] += sorted(listing.val.get(class_id, []), key=lambda i: i.key)
    return list(kept), _cut(splits, recipe), dropped


def _vocabulary_splits(listing: Listing, recipe: PrepareRecipe) -> dict[str, list[Item]]:
    """The source's own val split, or ``val_per_class`` images of each label group held out
    (at most half of a group, so that a rare label keeps training images)."""
    rng = random.Random(recipe.seed)
    splits: dict[str, list[Item]] = {"train": [], "val": []}
    for group in sorted(listing.items):
        items = sorted(listing.items[group], key=lambda i: i.key)
        held_out = 0 if listing.val else min(recipe.val_per_class, len(items) // 2)
        held = set(rng.sample(range(len(items)), held_out))
        for i, item in enumerate(items):
            splits["val" if i in held else "train"].append(item)
    for group in sorted(listing.val):
        splits["val"] += sorted(listing.val[group], key=lambda i: i.key)
    return splits


def _cut(splits: dict[str, list[Item]], recipe: PrepareRecipe) -> dict[str, list[list[Item]]]:
    shards: dict[str, list[list[Item]]] = {}
    for offset, (split, items) in enumerate(splits.items()):
        random.Random(recipe.seed * 7919 + offset).shuffle(items)  # mixes classes across shards
        n = recipe.shard_samples
        shards[split] = [items[i : i + n] for i in range(0, len(items), n)]
    return shards


def prepare(recipe: PrepareRecipe, *, show_progress: bool = True) -> Manifest:
    """Prepare ``recipe.source`` into a dataset at ``recipe.output``.

    Raises:
        HypernymError: a missing or unrecognised source, an existing dataset without
            ``overwrite``, or more bad images than ``max_bad_fraction`` allows.
    """
    _check_apart(recipe.source, recipe.output)
    check_cluster(get_settings(), prepare_locations(source=recipe.source, output=recipe.output))
    out_fs, out_path = open_fs(recipe.output)
    exists = out_fs.exists(join(out_path, MANIFEST))
    if exists and not recipe.overwrite:
        raise HypernymError(
            f"{recipe.output} already holds a dataset; pass --set overwrite=true to replace it"
        )
    listing = list_source(recipe.source, recipe.source_format,  # bad sources fail here, early
                          devkit=recipe.devkit, label_separator=recipe.label_separator,
                          boxes=recipe.boxes)
    if listing.classes is not None and recipe.exclude_subtrees:
        raise HypernymError("exclude_subtrees leaves out whole classes of a single-label source; "
                            "this source's images carry several labels each: drop the key")
    filtered = exclude_subtrees(listing, recipe.exclude_subtrees)
    if recipe.dedupe:
        filtered.update(drop_duplicates(listing, recipe.source))
    class_ids, plan, dropped = plan_splits(listing, recipe)
    dropped.update(filtered)
    if exists:
        _clear(out_fs, out_path)  # the old manifest goes first: never a finished-looking mix
    class_index = {c: i for i, c in enumerate(class_ids)}
    hierarchy = _hierarchy(class_ids, recipe.hierarchy)  # a bad tree file fails before any work
    out_fs.makedirs(join(out_path, PARTS_DIR), exist_ok=True)

    jobs = [(split, f"{split}-{i:06d}.tar", items)
            for split, shard_items in plan.items() for i, items in enumerate(shard_items)]
    multi_label = is_multi_label(listing, plan)
    results = _run_tasks(shard_tasks(jobs, recipe, class_index, listing,
                                     multi_label=multi_label), show_progress=show_progress)

    skipped = Counter(listing.skipped)
    bad_sources = Counter(listing.skipped_sources)
    for result in results.values():
        skipped.update(result.skipped)
        bad_sources.update(result.bad_sources)
    total = sum(len(v) for part in (listing.items, listing.val) for v in part.values()) \
        + sum(listing.skipped.values())
    bad = sum(skipped.values())
    if total and bad / total > recipe.max_bad_fraction:
        worst = ", ".join(f"{s.rsplit('/', 1)[-1]} ({n})" for s, n in bad_sources.most_common(5))
        raise HypernymError(
            f"{bad} of {total} source images are unusable ({dict(skipped)}), over "
            f"max_bad_fraction={recipe.max_bad_fraction}; worst sources: {worst}. Fix or remove "
            "them, or raise max_bad_fraction. Finished shards are kept for the rerun."
        )
    splits = {split: [results[name].info for s, name, _ in jobs if s == split]
              for split in plan}
    params = recipe.model_dump(mode="json")
    stats: dict = {"mixing": {split: mixing([results[name].class_counts for s, name, _ in jobs
                                             if s == split]) for split in plan}}
    if listing.annotated:
        stats["annotations"] = annotation_summary(listing, results, jobs, class_ids,
                                                  multi_label=multi_label)
        dropped.update({f"annotation_{k}": v for k, v in listing.annotation_skipped.items()})
        for result in results.values():
            dropped.update({f"annotation_{k}": v for k, v in result.annotation_skipped.items()})
    manifest = Manifest(
        name=recipe.name or out_path.rstrip("/").rsplit("/", 1)[-1],
        recipe={"name": RECIPE_NAME, "version": RECIPE_VERSION, "params": params},
        classes=[ClassInfo(index=i, id=c, name=_class_name(c)) for i, c in enumerate(class_ids)],
        hierarchy=hierarchy,
        splits=splits,
        dropped={**dict(dropped), **{f"skipped_{k}": v for k, v in skipped.items()}},
        stats=stats,
        fingerprint=fingerprint(params, class_ids, [i for v in splits.values() for i in v]),
    )
    _remove_strays(out_fs, out_path, keep={name for _, name, _ in jobs})
    write_timm_info(recipe.output, manifest)
    write_manifest(recipe.output, manifest)  # last: only now is this a dataset
    out_fs.rm(join(out_path, PARTS_DIR), recursive=True)
    return manifest


def mixing(shard_counts: list[Counter]) -> dict[str, float]:
    """How well classes are mixed: each shard's class histogram against the split's.

    ``tv_mean``/``tv_max`` are total-variation distances (0: a shard is a perfect miniature of
    the split; 1: disjoint, as one-tar-per-class shards would be).
    """
    total = Counter()
    for counts in shard_counts:
        total.update(counts)
    n = sum(total.values())
    if not n:
        return {"tv_mean": 0.0, "tv_max": 0.0, "classes_per_shard": 0.0}
    tvs = []
    for counts in shard_counts:
        m = sum(counts.values()) or 1
        tvs.append(0.5 * sum(abs(counts[c] / m - total[c] / n) for c in total))
    return {"tv_mean": round(sum(tvs) / len(tvs), 4), "tv_max": round(max(tvs), 4),
            "classes_per_shard": round(sum(len(c) for c in shard_counts) / len(shard_counts), 2)}


def shard_tasks(jobs, recipe: PrepareRecipe, class_index: dict[str, int], listing: Listing, *,
                multi_label: bool) -> dict[str, dict]:
    """`write_shard`'s keyword arguments for each shard of the plan, by shard name."""
    tasks = {}
    for _split, name, items in jobs:
        annotations = None
        if listing.annotated:
            annotations = ShardAnnotations({i.key: listing.annotations[i.key] for i in items
                                            if i.key in listing.annotations},
                                           multi_label=multi_label)
        tasks[name] = dict(items=items, name=name, output=recipe.output, source=recipe.source,
                           class_index=class_index, size=recipe.image_size,
                           resize=recipe.resize, quality=recipe.jpeg_quality,
                           annotations=annotations)
    return tasks


def _run_tasks(tasks: dict[str, dict], *, show_progress: bool) -> dict[str, ShardResult]:
    import ray

    from hypernym.runtime import ensure_ray

    ensure_ray()
    results: dict[str, ShardResult] = {}
    task = ray.remote(num_cpus=1)(write_shard)
    # Every shard is a task, finished ones too: the task checks a previous run's shard (by
    # re-hashing it), so that check runs in parallel on the cluster, not serially here.
    pending = {task.remote(**kwargs): name for name, kwargs in tasks.items()}
    with ProgressBar("prepare", total=len(tasks), unit="shards", enabled=show_progress) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)
                bar.advance()
    return results


def _clear(fs, path: str) -> None:
    fs.rm(join(path, MANIFEST))
    if fs.exists(join(path, TIMM_INFO)):
        fs.rm(join(path, TIMM_INFO))
    for entry in fs.ls(path, detail=False):
        name = entry.rsplit("/", 1)[-1]
        if name.endswith(".tar") or name == PARTS_DIR:
            fs.rm(entry, recursive=True)


_SHARD_NAME = re.compile(r"\.?[a-z]+-\d{6}\.tar(\.tmp)?")


def _remove_strays(fs, path: str, *, keep: set[str]) -> None:
    """Shards of an earlier, different plan (and temp files of a crashed write) are not part of
    this dataset: remove them, so a glob over the directory finds only the manifest's shards.
    Only names this module writes are touched."""
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if _SHARD_NAME.fullmatch(name) and name not in keep:
            fs.rm(entry)


def _check_apart(source: str, output: str) -> None:
    """Output and a source directory must not overlap: overwriting and the clean-up of stale
    shards delete ``*.tar`` files in the output, which in a winter21 source are the raw data."""
    src_fs, src = open_fs(source)
    out_fs, out = open_fs(output)
    if src_fs.protocol != out_fs.protocol or src_fs.isfile(src):  # a table's folder may hold it
        return
    if not src_fs.exists(src):
        return  # listing reports the missing source
    if "://" not in str(source):
        src, out = os.path.realpath(src), os.path.realpath(out)
    src, out = src.rstrip("/") + "/", out.rstrip("/") + "/"
    if out.startswith(src) or src.startswith(out):
        raise HypernymError(f"output {output} overlaps the source {source}: write the dataset "
                            "to a directory outside the raw images (and not above them)")


def _class_name(class_id: str) -> str:
    from hypernym.taxonomy.hierarchy import Hierarchy

    hierarchy = Hierarchy.imagenet21k()
    return hierarchy.lemma(class_id) if class_id in hierarchy else class_id


def _hierarchy(class_ids: list[str], tree_file: str | None) -> dict:
    from hypernym.taxonomy.hierarchy import class_hierarchy, tree_hierarchy

    if tree_file is None:
        return class_hierarchy(class_ids)
    import yaml

    fs, path = open_fs(tree_file)
    if not fs.isfile(path):
        raise HypernymError(f"hierarchy file {tree_file} does not exist")
    parents = yaml.safe_load(fs.cat_file(path))  # YAML is a superset of JSON
    if not isinstance(parents, dict):
        raise HypernymError(f"{tree_file}: expected a mapping of class -> parent")
    return tree_hierarchy(class_ids, {str(k): v for k, v in parents.items()})
