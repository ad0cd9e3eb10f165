"""Optional recipe filters applied to a listing before planning: WordNet subtree exclusion and
exact-duplicate removal. Both report what they removed, for the manifest."""

from __future__ import annotations

import hashlib
from collections import Counter

from hypernym.data.sources import Item, Listing, read_item
from hypernym.data.storage import open_fs
from hypernym.errors import HypernymError

__all__ = ["drop_duplicates", "exclude_subtrees"]


def exclude_subtrees(listing: Listing, roots: list[str]) -> Counter:
    """Leave out every class under any of ``roots`` (e.g. the person subtree n00007846)."""
    from hypernym.taxonomy.hierarchy import Hierarchy

    dropped: Counter = Counter()
    if not roots:
        return dropped
    hierarchy = Hierarchy.imagenet21k()
    unknown = [r for r in roots if r not in hierarchy]
    if unknown:
        raise HypernymError(f"exclude_subtrees: {unknown} are not WordNet synsets known to "
                            "hypernym (ids look like n00007846)")
    for class_id in list(listing.items):
        if class_id in hierarchy and any(hierarchy.is_a(class_id, r) for r in roots):
            dropped["excluded_subtree_classes"] += 1
            dropped["excluded_subtree_images"] += len(listing.items.pop(class_id))
    return dropped


def _hash_chunk(source: str, items: list[Item]) -> list[str | None]:
    fs, _ = open_fs(source)
    handles: dict = {}
    out: list[str | None] = []
    try:
        for item in items:
            try:
                out.append(hashlib.sha256(read_item(fs, item, handles)).hexdigest())
            except (OSError, EOFError):
                out.append(None)  # unreadable: the shard writer counts it
    finally:
        for fh in handles.values():
            fh.close()
    return out


def drop_duplicates(listing: Listing, source: str, *, chunk: int = 2000) -> Counter:
    """Keep the first of every set of byte-identical images (classes in sorted order).

    This reads every image once more, as Ray tasks (one per chunk of items, grouped by source
    file so that a tar is read sequentially).
    """
    import ray

    from hypernym.runtime import ensure_ray

    ensure_ray()
    ordered = [item for c in sorted(listing.items) for item in
               sorted(listing.items[c], key=lambda i: (i.source, i.offset, i.key))]
    task = ray.remote(num_cpus=1)(_hash_chunk)
    refs = [task.remote(source, ordered[i : i + chunk]) for i in range(0, len(ordered), chunk)]
    digests = [d for part in ray.get(refs) for d in part]
    seen: set[str] = set()
    keep: dict[str, list[Item]] = {}
    dropped: Counter = Counter()
    for item, digest in zip(ordered, digests, strict=True):
        if digest is not None and digest in seen:
            dropped["duplicate_images"] += 1
            continue
        if digest is not None:
            seen.add(digest)
        keep.setdefault(item.class_id, []).append(item)
    listing.items = keep
    return dropped
