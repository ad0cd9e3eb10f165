"""The WordNet hierarchy of ImageNet-21K classes, from the file shipped in this package.

A synset's canonical path follows its first hypernym up to ``entity`` (n00001740); WordNet's other
parents are kept in ``parents``. Datasets whose classes are not synsets get a flat hierarchy.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from importlib import resources

from hypernym.errors import HypernymError

__all__ = ["ROOT", "Hierarchy", "class_hierarchy", "stats", "tree_hierarchy"]

ROOT = "n00001740"  # entity
_FILE = "imagenet21k_hierarchy.json.gz"


class Hierarchy:
    """Lemmas and hypernyms of WordNet noun synsets (``nXXXXXXXX`` ids)."""

    def __init__(self, *, synsets: dict[str, dict], imagenet21k: list[str]) -> None:
        self._synsets = synsets
        self.imagenet21k_ids = imagenet21k
        self._children: dict[str, list[str]] | None = None

    @classmethod
    @functools.cache
    def imagenet21k(cls) -> Hierarchy:
        """The shipped hierarchy: the 21,843 ImageNet-21K synsets and their ancestors."""
        raw = resources.files("hypernym.taxonomy").joinpath(_FILE).read_bytes()
        data = json.loads(gzip.decompress(raw))
        return cls(synsets=data["synsets"], imagenet21k=data["imagenet21k"])

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._synsets

    def _get(self, wnid: str) -> dict:
        try:
            return self._synsets[wnid]
        except KeyError:
            raise HypernymError(
                f"{wnid!r} is not an ImageNet-21K synset or one of its WordNet ancestors "
                "(ids are WordNet 3.0 noun offsets like n02084071)"
            ) from None

    def lemma(self, wnid: str) -> str:
        return self._get(wnid)["l"]

    def parents(self, wnid: str) -> list[str]:
        return list(self._get(wnid)["p"])

    def in_imagenet21k(self, wnid: str) -> bool:
        return bool(self._get(wnid).get("i"))

    def path(self, wnid: str) -> list[str]:
        """``[entity, ..., wnid]`` along first hypernyms."""
        out = [wnid]
        while parents := self._get(out[-1])["p"]:
            out.append(parents[0])
        return out[::-1]

    def depth(self, wnid: str) -> int:
        return len(self.path(wnid)) - 1

    def is_a(self, wnid: str, ancestor: str) -> bool:
        """True if ``ancestor`` is on any hypernym path of ``wnid`` (or is wnid)."""
        stack, seen = [wnid], set()
        while stack:
            node = stack.pop()
            if node == ancestor:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(self._get(node)["p"])
        return False

    def children(self, wnid: str) -> list[str]:
        """Direct hyponyms (within the shipped set)."""
        if self._children is None:
            kids: dict[str, list[str]] = {}
            for node, entry in self._synsets.items():
                for parent in entry["p"]:
                    kids.setdefault(parent, []).append(node)
            self._children = kids
        self._get(wnid)
        return sorted(self._children.get(wnid, []))


def class_hierarchy(class_ids: list[str], *, hierarchy: Hierarchy | None = None) -> dict:
    """The JSON-able hierarchy stored in a dataset manifest.

    ``wordnet`` when every class is a known synset: each class's path (root..class), its level
    (depth), and every node on those paths with parent and lemma. ``flat`` otherwise: every class
    is a child of one root.
    """
    hierarchy = hierarchy or Hierarchy.imagenet21k()
    if class_ids and all(c in hierarchy for c in class_ids):
        paths = {c: hierarchy.path(c) for c in class_ids}
        nodes = {}
        for path in paths.values():
            for parent, node in zip([None, *path[:-1]], path, strict=True):
                nodes[node] = {"parent": parent, "lemma": hierarchy.lemma(node)}
        return {"kind": "wordnet", "root": ROOT, "class_paths": paths, "nodes": nodes,
                "levels": {c: len(p) - 1 for c, p in paths.items()}}
    return {"kind": "flat", "root": "root", "class_paths": {c: ["root", c] for c in class_ids},
            "nodes": {"root": {"parent": None, "lemma": "root"},
                      **{c: {"parent": "root", "lemma": c} for c in class_ids}},
            "levels": dict.fromkeys(class_ids, 1)}


def tree_hierarchy(class_ids: list[str], parents: dict[str, str | None]) -> dict:
    """A user-given tree: ``parents`` maps every class and inner node to its parent (the root
    to None or absent). Same shape as the WordNet hierarchy, kind ``custom``."""
    missing = [c for c in class_ids if c not in parents]
    if missing:
        raise HypernymError(f"hierarchy file has no parent for classes {missing[:5]}: every "
                            "class needs an entry `class: parent`")
    paths, nodes = {}, {}
    for class_id in class_ids:
        path, node = [class_id], class_id
        while parents.get(node) is not None:
            node = parents[node]
            if node in path:
                raise HypernymError(f"hierarchy file has a cycle through {node!r}")
            path.append(node)
        path.reverse()
        paths[class_id] = path
        for parent, child in zip([None, *path[:-1]], path, strict=True):
            nodes[child] = {"parent": parent, "lemma": child}
    roots = {p[0] for p in paths.values()}
    return {"kind": "custom", "root": sorted(roots)[0] if len(roots) == 1 else None,
            "class_paths": paths, "nodes": nodes,
            "levels": {c: len(p) - 1 for c, p in paths.items()}}


def stats(class_ids: list[str], *, hierarchy: Hierarchy | None = None) -> dict:
    """Classes, depth figures and classes per depth of a class set."""
    levels = class_hierarchy(class_ids, hierarchy=hierarchy)["levels"]
    depths = list(levels.values())
    return {"classes": len(depths), "max_depth": max(depths, default=0),
            "mean_depth": sum(depths) / max(len(depths), 1),
            "classes_per_depth": dict(sorted(Counter(depths).items()))}
