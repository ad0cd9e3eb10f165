"""The cluster reachability rule, without Ray: which locations only one host can reach, and the
refusal message that names the setting to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernym.preflight import (
    local_path,
    prepare_locations,
    redact,
    refusal,
    training_locations,
    unreachable,
)
from hypernym.settings import get_settings


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("MLFLOW_TRACKING_URI", "HYPERNYM_ARTIFACT_ROOT", "HYPERNYM_STORAGE",
                "HYPERNYM_SHARED_FS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    return monkeypatch


@pytest.mark.parametrize(("uri", "tracking", "local"), [
    ("/data/ds", False, "/data/ds"),
    ("file:///data/ds", False, "/data/ds"),
    ("s3://bucket/ds", False, None),
    ("gs://bucket/ds", False, None),
    ("sqlite:////srv/mlflow.db", True, "/srv/mlflow.db"),
    ("file:///srv/mlruns", True, "/srv/mlruns"),
    ("/srv/mlruns", True, "/srv/mlruns"),
    ("http://mlflow:5000", True, None),
    ("https://user:pw@mlflow", True, None),
    ("postgresql://mlflow@db/mlflow", True, None),
    ("databricks", True, None),
])
def test_local_path(uri, tracking, local):
    assert local_path(uri, tracking=tracking) == (Path(local) if local else None)


def test_relative_sqlite_is_local_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("sqlite:///mlflow.db", tracking=True) == tmp_path.resolve() / "mlflow.db"


def test_embedded_defaults_are_refused_on_several_nodes_and_each_names_its_setting(clean_env):
    locs = training_locations(get_settings(), data_path="/data/ds")
    assert refusal(locs, (), nodes=1) is None  # one node: every path is reachable
    message = refusal(locs, (), nodes=3)
    assert message.startswith("this Ray cluster has 3 nodes")
    for setting in ("HYPERNYM_STORAGE=s3://", "MLFLOW_TRACKING_URI=http://",
                    "HYPERNYM_ARTIFACT_ROOT=s3://", "data.path=s3://", "HYPERNYM_SHARED_FS="):
        assert setting in message, message


def test_cluster_settings_pass(clean_env):
    clean_env.setenv("HYPERNYM_STORAGE", "s3://runs/team")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    settings = get_settings()
    assert settings.artifact_root is None  # the server's own (proxied) artifact store
    assert refusal(training_locations(settings, data_path="s3://data/ds"), (), nodes=8) is None


def test_one_local_setting_is_named_alone(clean_env):
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    clean_env.setenv("HYPERNYM_STORAGE", "/home/me/runs")
    message = refusal(training_locations(get_settings(), data_path="s3://d/ds"), (), nodes=2)
    assert "HYPERNYM_STORAGE" in message and "/home/me/runs" in message
    for other in ("MLFLOW_TRACKING_URI=", "HYPERNYM_ARTIFACT_ROOT=", "data.path="):
        assert other not in message


def test_shared_mount_lifts_the_refusal_only_under_it(clean_env):
    clean_env.setenv("HYPERNYM_STORAGE", "/mnt/shared/runs")
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:////mnt/shared/mlflow.db")
    clean_env.setenv("HYPERNYM_ARTIFACT_ROOT", "file:///mnt/shared/artifacts")
    clean_env.setenv("HYPERNYM_SHARED_FS", "/mnt/shared:/mnt/other")
    settings = get_settings()
    assert settings.shared_fs == (Path("/mnt/shared"), Path("/mnt/other"))
    locs = training_locations(settings, data_path="/mnt/other/ds")
    assert unreachable(locs, settings.shared_fs) == []
    assert refusal(locs, settings.shared_fs, nodes=4) is None
    # a sibling whose name merely starts like the mount is not under it
    locs = training_locations(settings, data_path="/mnt/shared-not/ds")
    assert [loc.setting for loc in unreachable(locs, settings.shared_fs)] == ["data.path"]


def test_prepare_locations():
    locs = prepare_locations(source="s3://raw/in", output="/local/out")
    assert [loc.setting for loc in unreachable(locs, ())] == ["output"]
    assert "output=s3://" in refusal(locs, (), nodes=2)


def test_storage_setting_forms(clean_env, tmp_path):
    assert get_settings().storage == str((tmp_path / "home" / "runs").resolve())
    clean_env.setenv("HYPERNYM_STORAGE", "file:///nfs/runs/")
    assert get_settings().storage == "/nfs/runs"
    clean_env.setenv("HYPERNYM_STORAGE", "s3://b/p/")
    assert get_settings().storage == "s3://b/p"


def test_redact_hides_a_password_in_a_uri():
    assert redact("https://bob:hunter2@mlflow:5000/x") == "https://bob:***@mlflow:5000/x"
    assert redact("http://mlflow:5000") == "http://mlflow:5000"
    message = refusal(training_locations(get_settings(), data_path="file://u:hunter2@h/x"),
                      (), nodes=2)
    assert "hunter2" not in message
