"""Credentials stay on the client: a submitted job carries the shell's settings but none of its
secrets (job info, the dashboard's job list over HTTP, hypernym's log), unless
``--forward-credentials`` asks for them, which the same checks then see."""

from __future__ import annotations

import pytest
import requests
from typer.testing import CliRunner

from hypernym.cli import app
from hypernym.errors import HypernymError
from hypernym.jobs.submit import job_info, list_jobs, stop_job, submit_recipe, wait_for
from tests.integration.jobs.test_jobs import prepare_recipe

pytestmark = pytest.mark.integration

SECRETS = {  # unique values: a leak anywhere cannot pass unseen
    "AWS_SECRET_ACCESS_KEY": "sk-3a9f61c0e2d84b7a",
    "AWS_ACCESS_KEY_ID": "AKIA7QX2M4ZK9T1B",
    "AWS_SESSION_TOKEN": "st-b81e0f5c7d2a",
    "MLFLOW_TRACKING_PASSWORD": "pw-6c2e9d41f07a",
    "MLFLOW_TRACKING_USERNAME": "user-0e7b3c",
    "HYPERNYM_API_TOKEN": "tok-5f1a8c3e90",
}
SETTINGS = {
    "MLFLOW_TRACKING_URI": "http://tracking.internal:5000",
    "HYPERNYM_STORAGE": "s3://runs/team",
    "AWS_ENDPOINT_URL": "http://s3.internal:9000",
    "AWS_DEFAULT_REGION": "eu-west-3",
}


def _stop(job_id: str, address: str) -> None:
    stop_job(job_id, address=address)  # only its runtime_env matters here
    wait_for(job_id, address=address, timeout=120)


def test_credentials_are_not_sent_unless_asked(ray_head, tmp_path, monkeypatch):
    for name, value in {**SECRETS, **SETTINGS}.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    monkeypatch.setenv("HYPERNYM_HOME", str(home))
    recipe = prepare_recipe(tmp_path)

    job_id = submit_recipe(recipe, address=ray_head)
    env = job_info(job_id, address=ray_head).runtime_env["env_vars"]
    assert {k: env.get(k) for k in SETTINGS} == SETTINGS, "settings travel with the job"
    listing = requests.get(f"{ray_head}/api/jobs/", timeout=30).text
    assert job_id in listing
    for name, value in SECRETS.items():
        assert name not in env
        assert value not in str(job_info(job_id, address=ray_head)) and value not in listing
    _stop(job_id, ray_head)

    # A password inside the tracking URI is a credential too: the URI travels without it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bob:pw-in-uri-71c2@tracking.internal")
    job_id = submit_recipe(recipe, address=ray_head)
    env = job_info(job_id, address=ray_head).runtime_env["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "https://tracking.internal"
    _stop(job_id, ray_head)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SETTINGS["MLFLOW_TRACKING_URI"])

    # A secret handed explicitly needs the opt-in as well; nothing is submitted without it.
    before = len(list_jobs(address=ray_head))
    with pytest.raises(HypernymError, match="AWS_SECRET_ACCESS_KEY would be visible.*"
                                            "--forward-credentials"):
        submit_recipe(recipe, address=ray_head, env={"AWS_SECRET_ACCESS_KEY": "x"})
    assert len(list_jobs(address=ray_head)) == before

    # With the opt-in they do travel (so the checks above can fail), with a warning.
    res = CliRunner().invoke(app, ["submit", str(recipe), "--address", ray_head,
                                   "--forward-credentials"])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "can read them" in " ".join(res.output.split())
    forwarded = res.stdout.strip().splitlines()[-1]
    env = job_info(forwarded, address=ray_head).runtime_env["env_vars"]
    assert {k: env.get(k) for k in SECRETS} == SECRETS
    listing = requests.get(f"{ray_head}/api/jobs/", timeout=30).text
    assert all(value in listing for value in SECRETS.values())
    _stop(forwarded, ray_head)

    log = (home / "logs" / "hypernym.log").read_text()
    assert "forwarding credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in log
    for value in SECRETS.values():
        assert value not in log and value not in res.output
