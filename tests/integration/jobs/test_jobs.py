"""Job submission against real Ray head processes with the dashboard (Jobs API)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hypernym.cli import app
from hypernym.errors import HypernymError
from hypernym.jobs.submit import (
    job_info,
    job_logs,
    job_status,
    list_jobs,
    resolve_address,
    stop_job,
    submit_command,
    submit_recipe,
    wait_for,
)

pytestmark = pytest.mark.integration
runner = CliRunner()


def make_folder(root: Path) -> Path:
    """3 classes x 6 small JPEGs, one folder per class."""
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                root / c / f"{i}.jpg")
    return root


def prepare_recipe(tmp_path: Path, **extra: str) -> Path:
    make_folder(tmp_path / "raw")
    lines = {"kind": "prepare", "source": str(tmp_path / "raw"), "output": str(tmp_path / "out"),
             "source_format": "folder", "val_per_class": "1", "min_per_class": "0",
             "image_size": "32", **extra}
    recipe = tmp_path / "prep.yaml"
    recipe.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return recipe


def test_submit_prepare_recipe_runs_on_the_cluster(ray_head, tmp_path, monkeypatch):
    # Relative paths, as a user writes them: the job runs in its own working_dir, so they only
    # land here if submit_recipe made them absolute.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tree.yaml").write_text("a: things\nb: things\nc: things\n")
    recipe = Path(prepare_recipe(tmp_path, source="raw", output="out", hierarchy="tree.yaml").name)
    # An ambient RAY_ADDRESS naming another cluster must not win over the explicit address
    # (Ray's own client lets the variable override its argument).
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    job_id = submit_recipe(recipe, address=ray_head, overrides=["jpeg_quality=80"],
                           env={"HYPERNYM_HOME": str(tmp_path / "home")}, wait=True)
    assert job_status(job_id, address=ray_head) == "SUCCEEDED"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["classes"]) == 3
    assert manifest["hierarchy"]["root"] == "things"
    assert f"dataset ready {tmp_path / 'out'}" in "".join(job_logs(job_id, address=ray_head))
    info = job_info(job_id, address=ray_head)
    assert info.entrypoint == "python -m hypernym run recipe.yaml"
    assert info.metadata["hypernym.kind"] == "prepare"
    assert info.runtime_env["env_vars"]["HYPERNYM_HOME"] == str(tmp_path / "home")
    assert job_id in [j.submission_id for j in list_jobs(address=ray_head)]


def test_cli_submit_follow_status_logs_list(ray_head, tmp_path):
    recipe = prepare_recipe(tmp_path)
    # --follow streams the job's output and exits 0 only when it SUCCEEDED
    res = runner.invoke(app, ["submit", str(recipe), "--address", ray_head, "--follow",
                              "--set", "name=followed"])
    assert res.exit_code == 0, res.output
    assert "dataset ready" in res.output and "SUCCEEDED" in res.output
    job_id = list_jobs(address=ray_head)[-1].submission_id
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["name"] == "followed"

    res = runner.invoke(app, ["jobs", "status", job_id, "--address", ray_head])
    assert res.exit_code == 0 and res.stdout.strip().splitlines()[0] == "SUCCEEDED", res.output
    res = runner.invoke(app, ["jobs", "logs", job_id, "--address", ray_head])
    assert res.exit_code == 0 and "dataset ready" in res.stdout
    res = runner.invoke(app, ["jobs", "list", "--address", ray_head])
    assert res.exit_code == 0 and job_id in res.stdout and "prepare" in res.stdout

    # without --follow: the job id alone on stdout, the follow/stop commands beside it
    res = runner.invoke(app, ["submit", str(recipe), "--address", ray_head,
                              "--set", "overwrite=true"])
    assert res.exit_code == 0, res.output
    new_id = res.stdout.strip().splitlines()[-1]
    assert new_id.startswith("raysubmit_") and f"hypernym jobs stop {new_id}" in res.output
    assert job_info(new_id, address=ray_head).metadata["hypernym.recipe"] == str(recipe)
    stop_job(new_id, address=ray_head)  # its run was checked above; don't spend the time again
    assert wait_for(new_id, address=ray_head, timeout=60) in ("STOPPED", "SUCCEEDED")


def test_cli_as_a_process_reports_an_unknown_job_clearly(ray_head):
    proc = subprocess.run(
        [sys.executable, "-m", "hypernym", "jobs", "status", "raysubmit_nope", "--address",
         ray_head], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no job 'raysubmit_nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_recipe_is_rejected_before_submission(ray_head, tmp_path):
    before = len(list_jobs(address=ray_head))
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("kind: prepare\nsource: x\noutput: y\nimage_sise: 3\n")
    with pytest.raises(HypernymError, match="image_sise"):
        submit_recipe(recipe, address=ray_head)
    with pytest.raises(HypernymError, match="image_size"):
        submit_recipe(prepare_recipe(tmp_path), address=ray_head, overrides=["image_size=2"])
    assert len(list_jobs(address=ray_head)) == before


def test_wait_raises_when_the_job_fails_on_the_cluster(ray_head, tmp_path):
    # valid here, but its source does not exist where the job runs
    recipe = prepare_recipe(tmp_path, source=str(tmp_path / "missing"))
    with pytest.raises(HypernymError, match=r"(?s)job raysubmit_\w+ FAILED.*missing.*"
                                            r"hypernym jobs logs raysubmit_"):
        submit_recipe(recipe, address=ray_head, wait=True)
    assert list_jobs(address=ray_head)[-1].status.value == "FAILED"


def test_stop_a_running_job_and_follow_its_logs(ray_head):
    job_id = submit_command(
        'python -c "import time; print(\'started\', flush=True); time.sleep(300)"',
        address=ray_head)
    deadline = time.monotonic() + 60
    while job_status(job_id, address=ray_head) != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    stream = job_logs(job_id, address=ray_head, follow=True)
    seen = ""
    while "started" not in seen:  # the first chunks arrive while the job still runs
        seen += next(stream)
    assert job_status(job_id, address=ray_head) == "RUNNING"
    assert stop_job(job_id, address=ray_head)
    list(stream)  # returns (does not hang) once the job has stopped
    assert wait_for(job_id, address=ray_head, timeout=60) == "STOPPED"
    assert not stop_job(job_id, address=ray_head)  # already ended
    for call in (job_status, job_info, stop_job, lambda j, address: list(job_logs(
            j, address=address))):
        with pytest.raises(HypernymError, match="no job 'raysubmit_nope'.*hypernym jobs list"):
            call("raysubmit_nope", address=ray_head)


def test_unreachable_cluster_fails_fast_and_clearly(monkeypatch):
    started = time.monotonic()
    with pytest.raises(HypernymError, match=r"no Ray Jobs API at http://127.0.0.1:9 .*"
                                            r"infra/local_cluster.sh start.*RAY_ADDRESS="):
        list_jobs(address="http://127.0.0.1:9")
    # a non-routable address times out on the connect probe instead of hanging
    with pytest.raises(HypernymError, match="no Ray Jobs API at http://10.255.255.1:8265"):
        job_status("x", address="http://10.255.255.1:8265")
    assert time.monotonic() - started < 15
    for bad in ("ftp://head:8265", "not an address", "ray://:10001"):
        with pytest.raises(HypernymError, match="must look like http://HOST:8265"):
            list_jobs(address=bad)
    # address resolution, in ray job's order: explicit, RAY_API_SERVER_ADDRESS, RAY_ADDRESS
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert resolve_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert resolve_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "https://head:8265/")
    assert resolve_address() == "https://head:8265"
    # a cluster address means the dashboard on its host
    for cluster_address in ("10.0.0.5:6379", "ray://10.0.0.5:10001", "10.0.0.5"):
        monkeypatch.setenv("RAY_ADDRESS", cluster_address)
        assert resolve_address() == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://api:8265")
    assert resolve_address() == "http://api:8265"
    assert resolve_address("http://x:1") == "http://x:1"


def test_token_auth_cluster(start_head, monkeypatch, tmp_path):
    head = start_head(auth="token")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token to fall back on
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)

    # Prime Ray's per-process auth cache with some other token, as an earlier call in this
    # process may have done (CI hit this): with none configured now, none may be sent.
    (tmp_path / "stale_token").write_text("1" * 64)
    with monkeypatch.context() as m:
        m.setenv("RAY_AUTH_MODE", "token")
        m.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "stale_token"))
        from ray._private.authentication.http_token_authentication import (
            get_auth_headers_if_auth_enabled,
        )
        get_auth_headers_if_auth_enabled({})
    with pytest.raises(HypernymError, match="requires a token.*RAY_AUTH_MODE=token"):
        list_jobs(address=head.url)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(HypernymError, match="RAY_AUTH_MODE=token but no token was found"):
        list_jobs(address=head.url)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    with pytest.raises(HypernymError, match="rejected the token"):
        list_jobs(address=head.url)

    # the right token, from the file Ray itself would read
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(head.token_file))
    job_id = submit_command("python -c \"print('hello from a token cluster')\"",
                            address=head.url)
    assert wait_for(job_id, address=head.url, timeout=60) == "SUCCEEDED"
    assert "hello from a token cluster" in "".join(job_logs(job_id, address=head.url))
    # the log stream (a websocket) carries the token too
    assert "hello from a token cluster" in "".join(job_logs(job_id, address=head.url,
                                                            follow=True))
    # ... and as RAY_AUTH_TOKEN, with the mode left unset (sent because one is available)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token_file.read_text())
    assert job_status(job_id, address=head.url) == "SUCCEEDED"
    assert "RAY_AUTH_TOKEN" not in job_info(job_id, address=head.url).runtime_env.get(
        "env_vars", {})  # tokens are never copied into the job's visible runtime_env
