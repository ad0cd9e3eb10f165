"""`hypernym taxonomy stats`."""

from __future__ import annotations

from typer.testing import CliRunner

from hypernym.cli import app
from hypernym.errors import HypernymError


def test_stats_for_the_21k_p_class_list():
    result = CliRunner().invoke(app, ["taxonomy", "stats", "--classes", "21k-p"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("10450 classes")  # timm's winter21 21K-P list
    assert "12 semantic levels" in result.output


def test_stats_for_a_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n02085620\nn02123045\nn02084071\n")
    result = CliRunner().invoke(app, ["taxonomy", "stats", "--classes", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 classes") and "2 semantic levels" in result.output


def test_a_missing_class_file_is_explained(tmp_path):
    result = CliRunner().invoke(app, ["taxonomy", "stats", "--classes", str(tmp_path / "no")])
    assert isinstance(result.exception, HypernymError)
    assert "expected 21k, 21k-p or a file" in str(result.exception)
