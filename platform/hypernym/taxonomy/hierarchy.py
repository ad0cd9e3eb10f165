"""The WordNet hierarchy of ImageNet classes, from the file shipped in this package (build.py).

WordNet has multiple inheritance. ``parents``, ``children``, ``descendants`` and ``is_a`` use every
hypernym; the canonical path (``path``, ``depth``, a manifest's class paths and semantic levels)
follows the first hypernym up to ``entity`` (n00001740), so each class has exactly one path.
Datasets whose classes are not synsets get a flat hierarchy, or a user-given tree.

Semantic levels (Ridnik et al. 2021, "ImageNet-21K Pretraining for the Masses", the 21K-P
"semantic softmax"): the WordNet tree is pruned to the dataset's own classes, so a class's level
is the number of its ancestors that are themselves classes of the dataset (``dog`` is a 21K-P
class and an ancestor of ``Chihuahua``). The semantic softmax has one softmax per level over the
classes of that level; a sample of a level-L class gets a target at every level 0..L (the class
of its semantic path at that level). Pruning timm's 10,450-class 21K-P list along first-hypernym
paths gives levels 0..11; the 21K-P code keeps levels holding more than one class and, through a
``range(max_depth)`` loop, drops the deepest, which leaves levels 0..10: the paper's 11.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections import Counter
from collections.abc import Mapping
from importlib import resources

from hypernym.errors import HypernymError

__all__ = ["ROOT", "Hierarchy", "class_hierarchy", "semantic_levels", "semantic_paths", "stats",
           "tree_hierarchy"]

ROOT = "n00001740"  # entity
_FILE = "imagenet21k_hierarchy.json.gz"
_WNID = re.compile(r"n\d{8}")


class Hierarchy:
    """Lemmas and hypernyms of WordNet 3.0 noun synsets (``nXXXXXXXX`` ids).

    Args:
        synsets: id -> {"l": lemma, "p": [parent ids, first is canonical], "i": 1 if the synset
            is in the ImageNet-21K list}.
        imagenet21k: the ImageNet-21K class ids, in timm's order.
    """

    def __init__(self, *, synsets: dict[str, dict], imagenet21k: list[str]) -> None:
        self._synsets = synsets
        self.imagenet21k_ids = imagenet21k
        self._children: dict[str, list[str]] | None = None
        self._paths: dict[str, list[str]] = {}

    @classmethod
    @functools.cache
    def imagenet21k(cls) -> Hierarchy:
        """The shipped hierarchy: every ImageNet synset timm lists, and its ancestors (cached)."""
        raw = resources.files("hypernym.taxonomy").joinpath(_FILE).read_bytes()
        data = json.loads(gzip.decompress(raw))
        return cls(synsets=data["synsets"], imagenet21k=data["imagenet21k"])

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._synsets

    def __len__(self) -> int:
        return len(self._synsets)

    def _get(self, wnid: str) -> dict:
        try:
            return self._synsets[wnid]
        except KeyError:
            raise HypernymError(_unknown(wnid)) from None

    def lemma(self, wnid: str) -> str:
        """The synset's first word, e.g. ``dog`` for n02084071."""
        return self._get(wnid)["l"]

    def parents(self, wnid: str) -> list[str]:
        """Direct hypernyms (and instance hypernyms), the canonical one first."""
        return list(self._get(wnid)["p"])

    def in_imagenet21k(self, wnid: str) -> bool:
        """Whether the synset is one of the 21,843 ImageNet-21K classes."""
        return bool(self._get(wnid).get("i"))

    def path(self, wnid: str) -> list[str]:
        """``[entity, ..., wnid]`` along first hypernyms."""
        if wnid not in self._paths:
            out = [wnid]
            while parents := self._get(out[-1])["p"]:
                out.append(parents[0])
            self._paths[wnid] = out[::-1]
        return list(self._paths[wnid])

    def depth(self, wnid: str) -> int:
        """Edges from entity (depth 0) along the canonical path."""
        return len(self.path(wnid)) - 1

    def is_a(self, wnid: str, ancestor: str) -> bool:
        """True if ``ancestor`` is ``wnid`` or above it along any hypernym."""
        self._get(ancestor)
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
        """Direct hyponyms within the shipped set (any of whose parents is ``wnid``), sorted."""
        if self._children is None:
            kids: dict[str, list[str]] = {}
            for node, entry in self._synsets.items():
                for parent in entry["p"]:
                    kids.setdefault(parent, []).append(node)
            self._children = kids
        self._get(wnid)
        return sorted(self._children.get(wnid, []))

    def descendants(self, wnid: str) -> list[str]:
        """Every synset below ``wnid`` along any hypernym (not ``wnid`` itself), sorted."""
        found: set[str] = set()
        stack = self.children(wnid)
        while stack:
            node = stack.pop()
            if node not in found:
                found.add(node)
                stack.extend(self.children(node))
        return sorted(found)

    def common_ancestor(self, wnids: list[str]) -> str:
        """The deepest synset on every one of the canonical paths of ``wnids``."""
        if not wnids:
            raise HypernymError("common_ancestor needs at least one synset id")
        paths = [self.path(w) for w in wnids]
        common = ROOT
        for nodes in zip(*paths, strict=False):
            if len(set(nodes)) > 1:
                break
            common = nodes[0]
        return common


def _unknown(wnid: str) -> str:
    if not isinstance(wnid, str) or not _WNID.fullmatch(wnid):
        return (f"{wnid!r} is not a WordNet synset id: ImageNet class ids are 'n' and an 8-digit "
                "WordNet 3.0 noun offset, e.g. n02084071 (dog)")
    return (f"{wnid} is not a WordNet 3.0 noun synset that hypernym knows: the shipped hierarchy "
            "holds every ImageNet class timm lists and their ancestors. Check the id (ids from "
            "another WordNet version differ), or give the dataset a flat or custom class tree")


def class_hierarchy(class_ids: list[str], *, hierarchy: Hierarchy | None = None) -> dict:
    """The JSON-able hierarchy stored in a dataset manifest.

    Args:
        class_ids: the dataset's class ids.
        hierarchy: defaults to the shipped ImageNet hierarchy.

    Returns:
        ``kind`` "wordnet" when every class is a known synset: ``root``, ``class_paths`` (class ->
        [entity, ..., class] along first hypernyms), ``nodes`` (every node on those paths ->
        {"parent", "lemma"}) and ``levels`` (class -> depth). Otherwise ``kind`` "flat": every
        class is a child of one node "root".
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


def semantic_paths(class_paths: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Each class's path pruned to the dataset's own classes: [top class, ..., class].

    Works on any manifest hierarchy's ``class_paths`` (wordnet, custom or flat). Entry ``i`` of a
    class's semantic path is its target in the level-``i`` softmax of a semantic softmax.
    """
    classes = set(class_paths)
    return {c: [node for node in path if node in classes] for c, path in class_paths.items()}


def semantic_levels(class_ids: list[str], *, hierarchy: Hierarchy | None = None) -> dict[str, int]:
    """class -> semantic level: how many of its (first-hypernym) ancestors are classes too.

    Classes that are not all synsets form a flat hierarchy, where every level is 0.
    """
    paths = class_hierarchy(class_ids, hierarchy=hierarchy)["class_paths"]
    return {c: len(p) - 1 for c, p in semantic_paths(paths).items()}


def stats(class_ids: list[str], *, hierarchy: Hierarchy | None = None) -> dict:
    """Classes, depth figures, classes per depth and classes per semantic level of a class set."""
    depths = list(class_hierarchy(class_ids, hierarchy=hierarchy)["levels"].values())
    semantic = semantic_levels(class_ids, hierarchy=hierarchy).values()
    return {"classes": len(depths), "max_depth": max(depths, default=0),
            "mean_depth": sum(depths) / max(len(depths), 1),
            "classes_per_depth": dict(sorted(Counter(depths).items())),
            "classes_per_semantic_level": dict(sorted(Counter(semantic).items()))}
