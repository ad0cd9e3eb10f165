"""`hypernym runs` option parsing and time text."""

from __future__ import annotations

import pytest

from hypernym.errors import HypernymError
from hypernym.runs.cli import ago, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600),
                                                ("1.5h", 5400), (" 2m ", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_says_what_to_give():
    with pytest.raises(HypernymError, match="such as 90s, 10m or 2h"):
        parse_duration("ten minutes")


def test_ages_read_naturally():
    assert ago(None, 0) == "-"
    assert ago(100, 150) == "50 s ago"
    assert ago(0, 600) == "10 min ago"
    assert ago(0, 3 * 3600) == "3.0 h ago"
