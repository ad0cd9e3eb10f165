from __future__ import annotations

from typer.testing import CliRunner

from hypernym.cli import app


def test_stats_for_the_21k_p_class_list():
    result = CliRunner().invoke(app, ["taxonomy", "stats", "--classes", "21k-p"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("10450 classes")  # timm's winter21 21K-P list


def test_stats_for_a_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n02085620\nn02123045\n")
    result = CliRunner().invoke(app, ["taxonomy", "stats", "--classes", str(path)])
    assert result.exit_code == 0 and result.output.startswith("2 classes")
