"""Build the shipped WordNet hierarchy of the ImageNet synsets (run by developers, not users).

    apt-get install wordnet-base   # Debian's WordNet 3.0: /usr/share/wordnet/data.noun
    python -m hypernym.taxonomy.build --wordnet-dir /usr/share/wordnet \\
        --out platform/hypernym/taxonomy/imagenet21k_hierarchy.json.gz

ImageNet class ids are WordNet 3.0 noun offsets (``n`` + the 8-digit offset in ``data.noun``), so
the hierarchy comes from WordNet itself; the generated file is committed and shipped inside the
package, and no user or CI machine needs WordNet.

Choices:
    * Which synsets: every id of every class list timm ships (``timm/data/_info/*synsets.txt``:
      Google's 21,843-class fall11 list, which holds every winter21 class, the 21K-P lists, 12K,
      22K, 1K and its variants), plus all of their WordNet ancestors. The union matters: the
      ImageNet-1K class n04399382 (teddy bear) is not in the 21K list. A flag marks the synsets
      of the 21,843-class list (``in_imagenet21k``).
    * Lemma: the synset's first word, underscores as spaces (the same first name timm's
      ``imagenet_synset_to_lemma.txt`` gives; a test checks them all).
    * Parents: both '@' (hypernym) and '@i' (instance hypernym) pointers, in data.noun's order, and
      all of them: WordNet has multiple inheritance (about 500 of the shipped synsets have two or
      more parents). ``Hierarchy.is_a`` follows every parent; the canonical path (``path``,
      ``depth``, the manifest's class paths and semantic levels) follows the first one, which is
      also the path the 21K-P semantic tree takes (see hierarchy.py).
    * Glosses are parsed (``parse_data_noun``) but not shipped: timm ships the definitions, and
      leaving them out keeps the file at about 0.4 MB.
    * Output: gzip (mtime 0) of compact JSON with sorted keys, so a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
from pathlib import Path

from hypernym.errors import HypernymError
from hypernym.taxonomy.hierarchy import ROOT

__all__ = ["build", "parse_data_noun", "timm_21k_synsets", "timm_info_dir", "timm_synset_lists"]

_21K_LIST = "imagenet21k_goog_synsets.txt"


def timm_info_dir() -> Path:
    """timm's ``data/_info`` folder of class lists, found without importing timm (and torch)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise HypernymError("timm is not installed: the ImageNet class lists come from it")
    return Path(spec.submodule_search_locations[0]) / "data" / "_info"


def timm_21k_synsets() -> list[str]:
    """The 21,843 synset ids timm ships for ImageNet-21K (Google's fall11 order)."""
    return _read_ids((timm_info_dir() / _21K_LIST).read_text())


def timm_synset_lists() -> dict[str, list[str]]:
    """Every synset list timm ships: file name -> ids (the lemma file counts as one)."""
    paths = sorted(p for p in timm_info_dir().iterdir()
                   if p.name.endswith("synsets.txt") or p.name == "imagenet_synset_to_lemma.txt")
    return {p.name: _read_ids(p.read_text()) for p in paths}


def _read_ids(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_data_noun(path: Path) -> dict[str, dict]:
    """``nXXXXXXXX`` -> {"lemma", "parents", "gloss"} for every synset of WordNet's data.noun.

    A data line is ``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt [ptr_symbol offset
    pos source/target]... | gloss``; counts are hexadecimal (w_cnt) and decimal (p_cnt).
    """
    synsets = {}
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):  # the licence header
                continue
            data, _, gloss = line.partition(" | ")
            fields = data.split()
            offset, word_count = fields[0], int(fields[3], 16)
            words = fields[4 : 4 + 2 * word_count : 2]
            pos = 4 + 2 * word_count
            parents = []
            for i in range(int(fields[pos])):
                symbol, target, target_pos = fields[pos + 1 + 4 * i : pos + 4 + 4 * i]
                if symbol in ("@", "@i") and target_pos == "n":
                    parents.append(f"n{target}")
            synsets[f"n{offset}"] = {"lemma": words[0].replace("_", " "), "parents": parents,
                                     "gloss": gloss.strip()}
    return synsets


def build(wordnet_dir: Path, out: Path, *, synsets: list[str] | None = None,
          imagenet21k: list[str] | None = None) -> dict:
    """Write the hierarchy file; returns what was written.

    Args:
        wordnet_dir: the directory holding WordNet 3.0's ``data.noun``.
        out: the ``.json.gz`` to write (atomically).
        synsets: the synsets to keep with their ancestors; every timm list by default.
        imagenet21k: the ids flagged as ImageNet-21K classes; timm's 21,843 by default.
    """
    nouns = parse_data_noun(Path(wordnet_dir) / "data.noun")
    in21k = timm_21k_synsets() if imagenet21k is None else imagenet21k
    if synsets is None:
        synsets = [wnid for ids in timm_synset_lists().values() for wnid in ids]
    wanted = sorted(set(synsets) | set(in21k))
    missing = [s for s in wanted if s not in nouns]
    if missing:
        raise SystemExit(f"{len(missing)} timm synsets are not WordNet 3.0 nouns, e.g. "
                         f"{missing[:5]}: is {wordnet_dir} WordNet 3.0?")
    flagged = set(in21k)
    keep: dict[str, dict] = {}
    stack = list(wanted)
    while stack:
        wnid = stack.pop()
        if wnid not in keep:
            keep[wnid] = {"l": nouns[wnid]["lemma"], "p": nouns[wnid]["parents"],
                          **({"i": 1} if wnid in flagged else {})}
            stack.extend(nouns[wnid]["parents"])
    for wnid in keep:  # every canonical path must end at entity, without a cycle
        seen, node = set(), wnid
        while keep[node]["p"] and node not in seen:
            seen.add(node)
            node = keep[node]["p"][0]
        if node != ROOT:
            raise SystemExit(f"{wnid}'s first-hypernym path ends at {node}, not at entity")
    data = {"source": "WordNet 3.0 data.noun", "root": ROOT, "imagenet21k": in21k,
            "synsets": keep}
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    os.replace(tmp, out)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).with_name("imagenet21k_hierarchy.json.gz"))
    args = parser.parse_args()
    data = build(args.wordnet_dir, args.out)
    flagged = sum(1 for s in data["synsets"].values() if s.get("i"))
    print(f"wrote {args.out}: {len(data['synsets'])} synsets ({flagged} of the ImageNet-21K "
          f"list), {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
