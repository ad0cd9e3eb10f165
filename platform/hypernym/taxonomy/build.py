"""Build the shipped WordNet hierarchy of the ImageNet-21K synsets (run by developers, not users).

    apt-get install wordnet-base   # WordNet 3.0; ImageNet ids are its noun offsets
    python -m hypernym.taxonomy.build --wordnet-dir /usr/share/wordnet \
        --out platform/hypernym/taxonomy/imagenet21k_hierarchy.json.gz

The output holds every synset of timm's ImageNet-21K list (winter21/fall11 ids) and all of their
WordNet ancestors: lemma, direct hypernyms ('@' and instance '@i' pointers, all kept: WordNet
has multiple inheritance) and whether the synset is in the 21K list. Users never need WordNet.
"""

from __future__ import annotations

import argparse
import gzip
import json
from importlib import resources
from pathlib import Path

__all__ = ["build", "parse_data_noun", "timm_21k_synsets"]


def timm_21k_synsets() -> list[str]:
    """The 21,843 synset ids timm ships for ImageNet-21K (Google's fall11/winter21 order)."""
    text = resources.files("timm.data._info").joinpath("imagenet21k_goog_synsets.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_data_noun(path: Path) -> dict[str, dict]:
    """``nXXXXXXXX`` -> {"lemma", "parents"} for every noun synset of WordNet's data.noun."""
    synsets = {}
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            words = fields[4 : 4 + 2 * word_count : 2]
            pos = 4 + 2 * word_count
            pointer_count = int(fields[pos])
            parents = []
            for i in range(pointer_count):
                symbol, target, target_pos = fields[pos + 1 + 4 * i : pos + 4 + 4 * i]
                if symbol in ("@", "@i") and target_pos == "n":
                    parents.append(f"n{target}")
            synsets[f"n{offset}"] = {"lemma": words[0].replace("_", " "), "parents": parents}
    return synsets


def build(wordnet_dir: Path, out: Path) -> dict:
    nouns = parse_data_noun(wordnet_dir / "data.noun")
    wanted = timm_21k_synsets()
    missing = [s for s in wanted if s not in nouns]
    if missing:
        raise SystemExit(f"{len(missing)} ImageNet ids are not WordNet 3.0 nouns: {missing[:5]}")
    in21k = set(wanted)
    keep, stack = {}, list(wanted)
    while stack:
        wnid = stack.pop()
        if wnid in keep:
            continue
        keep[wnid] = {"l": nouns[wnid]["lemma"], "p": nouns[wnid]["parents"],
                      **({"i": 1} if wnid in in21k else {})}
        stack.extend(nouns[wnid]["parents"])
    data = {"source": "WordNet 3.0 data.noun", "imagenet21k": wanted, "synsets": keep}
    out.write_bytes(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).with_name("imagenet21k_hierarchy.json.gz"))
    args = parser.parse_args()
    data = build(args.wordnet_dir, args.out)
    print(f"wrote {args.out}: {len(data['imagenet21k'])} ImageNet-21K synsets, "
          f"{len(data['synsets'])} with ancestors, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
