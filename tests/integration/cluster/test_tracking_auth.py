"""Tracking credentials against a real ``mlflow server --app-name basic-auth`` on 127.0.0.1: a
wrong or missing password is a clear error before any Ray work (and before the dataset is even
read), the password appears in no message or log, and the right one opens and logs a run."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from hypernym.cli import app
from hypernym.errors import HypernymError
from tests.servers import start_mlflow_server

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "adm-7f3c1e9b2a"  # unique strings: a leak cannot pass unseen
WRONG_PASSWORD = "wrong-5d8e0a4c71"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A basic-auth tracking server (SQLite is enough here)."""
    state = tmp_path_factory.mktemp("auth-server")
    config = state / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{state / 'users.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key"}
    with start_mlflow_server(state, app_name="basic-auth", env=env) as running:
        yield running.url


def _client_env(monkeypatch, tmp_path, url, *, user, password):
    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for var, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)


def test_wrong_password_is_refused_before_any_work(server, tmp_path, monkeypatch):
    _client_env(monkeypatch, tmp_path, server, user="admin", password=WRONG_PASSWORD)
    recipe = tmp_path / "pretrain.yaml"  # its dataset does not exist: the check comes first
    recipe.write_text(f"kind: pretrain\nname: auth\ndata:\n  path: {tmp_path / 'nowhere'}\n"
                      "model:\n  arch: resnet10t\n")
    # In this process (a subprocess would spend its time importing): the CLI's own call.
    ray_before = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    result = CliRunner().invoke(app, ["pretrain", str(recipe)])
    assert ("ray" in sys.modules and sys.modules["ray"].is_initialized()) == ray_before
    message = str(result.exception)
    assert isinstance(result.exception, HypernymError), result.output
    assert (f"the MLflow tracking server at {server} refused the credentials of user 'admin'"
            in message), message
    assert "MLFLOW_TRACKING_PASSWORD" in message
    log = (tmp_path / "home" / "logs" / "hypernym.log").read_text()
    for text in (message, result.output, log):
        assert WRONG_PASSWORD not in text
    assert not (tmp_path / "home" / "runs").exists()


def test_missing_credentials_and_the_right_ones(server, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from hypernym import tracking
    from hypernym.preflight import check_tracking
    from hypernym.settings import get_settings

    _client_env(monkeypatch, tmp_path, server, user=None, password=None)
    with pytest.raises(HypernymError, match="refused a request without credentials "
                                            r"\(MLFLOW_TRACKING_USERNAME is not set\)"):
        check_tracking(get_settings())

    _client_env(monkeypatch, tmp_path, server, user="admin", password=ADMIN_PASSWORD)
    settings = get_settings()
    assert settings.artifact_root is None  # experiments use the server's proxied store
    check_tracking(settings)
    run_id = tracking.start_run(experiment="auth", run_name="ok", settings=settings)
    logger = tracking.RunLogger(run_id, tracking_uri=settings.tracking_uri)
    logger.log_params({"data": {"path": "s3://d/ds"}, "aws_secret_access_key": ADMIN_PASSWORD})
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.finish("FINISHED")
    run = MlflowClient(settings.tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"train/loss": 1.5}
    assert run.data.params == {"data.path": "s3://d/ds"}  # a secret-named key is never logged
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert logger.failures == 0
