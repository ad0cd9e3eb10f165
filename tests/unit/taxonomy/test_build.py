"""build.py on a tiny data.noun in WordNet 3.0's format (the real one is not on CI machines)."""

from __future__ import annotations

import gzip
import json

from hypernym.taxonomy.build import build, parse_data_noun
from hypernym.taxonomy.hierarchy import Hierarchy

# A data line: offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt
# [symbol offset pos source/target]... | gloss, ending in two spaces like WordNet's own.
LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by",
    "  2 Princeton University under the following license.",
    "00001740 03 n 01 entity 0 001 ~ 00001930 n 0000 | that which is perceived to exist  ",
    "00001930 03 n 01 physical_entity 0 002 @ 00001740 n 0000 ~ 00002000 n 0000 "
    "| an entity that has physical existence  ",
    "00002000 03 n 02 thing 0 object 0 001 @ 00001930 n 0000 | a tangible thing  ",
    "00003000 03 n 01 part 0 001 @ 00001930 n 0000 | something less than the whole  ",
    "00004000 05 n 0b great_dane 0 a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 "
    "003 @ 00002000 n 0000 @ 00003000 n 0000 + 01234567 v 0000 | a very large dog  ",
    "00005000 18 n 01 Fido 0 001 @i 00004000 n 0000 | a particular dog  ",
    "00006000 03 n 01 unrelated 0 001 @ 00001740 n 0000 | not asked for  ",
]
DATA_NOUN = "\n".join(LINES) + "\n"


def test_parse_data_noun(tmp_path):
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    nouns = parse_data_noun(tmp_path / "data.noun")
    assert set(nouns) == {"n00001740", "n00001930", "n00002000", "n00003000", "n00004000",
                          "n00005000", "n00006000"}
    assert nouns["n00001930"]["lemma"] == "physical entity"  # first word, underscores to spaces
    assert nouns["n00001930"]["parents"] == ["n00001740"]  # '~' (hyponym) pointers ignored
    assert nouns["n00004000"]["lemma"] == "great dane"  # 0b = 11 words, counted in hex
    assert nouns["n00004000"]["parents"] == ["n00002000", "n00003000"]  # verb pointer ignored
    assert nouns["n00005000"]["parents"] == ["n00004000"]  # instance hypernym '@i'
    assert nouns["n00004000"]["gloss"] == "a very large dog"


def test_build_keeps_the_synsets_and_their_ancestors(tmp_path):
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    out = tmp_path / "h.json.gz"
    build(tmp_path, out, synsets=["n00005000"], imagenet21k=["n00004000"])
    data = json.loads(gzip.decompress(out.read_bytes()))
    assert set(data["synsets"]) == {"n00001740", "n00001930", "n00002000", "n00003000",
                                    "n00004000", "n00005000"}  # not the unrelated synset
    h = Hierarchy(synsets=data["synsets"], imagenet21k=data["imagenet21k"])
    assert h.path("n00005000") == ["n00001740", "n00001930", "n00002000", "n00004000",
                                   "n00005000"]  # first parents
    assert h.is_a("n00005000", "n00003000")  # the second parent is kept
    assert h.in_imagenet21k("n00004000") and not h.in_imagenet21k("n00005000")
    first = out.read_bytes()
    build(tmp_path, out, synsets=["n00005000"], imagenet21k=["n00004000"])
    assert out.read_bytes() == first  # reproducible: a rebuild changes nothing
