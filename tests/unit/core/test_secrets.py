"""Secrets by name: what a submitted job may carry, and what hypernym's log may hold."""

from __future__ import annotations

import logging

import pytest

from hypernym.errors import HypernymError
from hypernym.jobs.submit import job_env_vars
from hypernym.settings import is_secret, redact_secrets


def test_is_secret():
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
                 "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_TOKEN",
                 "HYPERNYM_API_TOKEN", "MY_DB_PASSWD", "GCP_CREDENTIALS"):
        assert is_secret(name), name
    for name in ("MLFLOW_TRACKING_URI", "HYPERNYM_STORAGE", "AWS_ENDPOINT_URL",
                 "AWS_DEFAULT_REGION", "HYPERNYM_HOME"):
        assert not is_secret(name), name


def test_job_env_carries_settings_not_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk-value")
    monkeypatch.setenv("HYPERNYM_STORAGE", "s3://b/p")
    monkeypatch.setenv("HYPERNYM_API_TOKEN", "tok-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://u:pw-value@mlflow")
    env = job_env_vars({"HYPERNYM_HOME": "/h"})
    assert env["HYPERNYM_STORAGE"] == "s3://b/p" and env["AWS_ENDPOINT_URL"] == "http://s3:9000"
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow" and env["HYPERNYM_HOME"] == "/h"
    assert "sk-value" not in str(env) and "tok-value" not in str(env)
    assert "pw-value" not in str(env)
    with pytest.raises(HypernymError, match="HYPERNYM_API_TOKEN would be visible"):
        job_env_vars({"HYPERNYM_API_TOKEN": "x"})
    env = job_env_vars({"EXTRA_TOKEN": "x"}, forward_credentials=True)
    assert env["AWS_SECRET_ACCESS_KEY"] == "sk-value" and env["HYPERNYM_API_TOKEN"] == "tok-value"
    assert env["MLFLOW_TRACKING_URI"] == "https://u:pw-value@mlflow" and env["EXTRA_TOKEN"] == "x"


def test_log_file_never_holds_a_secret(tmp_path, monkeypatch):
    from hypernym.runtime import configure_logging

    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-9c1d7e")
    assert redact_secrets("http://bob:hunter2@h/x pw-9c1d7e") == "http://bob:***@h/x ***"
    path = configure_logging()
    log = logging.getLogger("mlflow.test")
    log.warning("request to https://bob:hunter2@mlflow/api failed with pw-9c1d7e")
    try:
        raise RuntimeError("auth pw-9c1d7e refused")
    except RuntimeError:
        log.exception("failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text()
    assert "https://bob:***@mlflow/api" in text and "RuntimeError: auth *** refused" in text
    assert "hunter2" not in text and "pw-9c1d7e" not in text
