from __future__ import annotations

from pathlib import Path

from hypernym.settings import get_settings


def test_embedded_defaults_are_absolute_and_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "h"))
    s = get_settings()
    assert s.home == (tmp_path / "h").resolve()
    assert s.tracking_uri == f"sqlite:///{s.home / 'mlflow.db'}"
    assert Path(s.tracking_uri.removeprefix("sqlite:///")).is_absolute()
    assert s.artifact_root.startswith("file:///")
    assert s.ray_address is None and s.embedded_tracking
    assert "--backend-store-uri sqlite:///" in s.mlflow_ui_command()


def test_default_home_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("HYPERNYM_HOME")
    monkeypatch.chdir(tmp_path)
    assert get_settings().home == (tmp_path / ".hypernym").resolve()


def test_cluster_settings_are_honoured(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = get_settings()
    assert s.ray_address == "ray://head:10001"
    assert s.tracking_uri == "http://mlflow:5000" and not s.embedded_tracking
