"""Job submission against a real Ray head process with the dashboard (Jobs API)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypernym.errors import HypernymError
from hypernym.jobs.submit import (
    job_logs,
    job_status,
    list_jobs,
    stop_job,
    submit_command,
    submit_recipe,
    wait_for,
)

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` in its own temp dir and session; stopped by its own address only."""
    temp = Path(tempfile_short())
    port, dash = free_port(), free_port()
    # The head (and so every job) runs this venv's python, as a cluster image would.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", str(temp),
         "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=180,
    )
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:  # the Jobs API comes up a little after the head
        try:
            list_jobs(address=url)
            break
        except HypernymError:
            time.sleep(1)
    yield url
    # Only this head's processes: they all carry its GCS port or temp dir on their command line
    # (a global `ray stop` would also stop other Ray instances on the machine).
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 0)):
        out = subprocess.run(["pgrep", "-f", f"({port}|{temp})"], capture_output=True,
                             text=True)
        for pid in map(int, out.stdout.split()):
            if pid != os.getpid():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        time.sleep(grace)
    assert not subprocess.run(["pgrep", "-f", str(temp)], capture_output=True).stdout


def tempfile_short() -> str:
    import tempfile

    # Ray's socket paths must stay under 107 bytes: pytest's tmp dirs are too deep.
    return tempfile.mkdtemp(prefix="hr-", dir="/tmp")


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                root / c / f"{i}.jpg")
    return root


def test_submit_prepare_recipe_runs_on_the_cluster(ray_head, tmp_path):
    src = make_folder(tmp_path / "raw")
    recipe = tmp_path / "prep.yaml"
    recipe.write_text(f"kind: prepare\nsource: {src}\noutput: {tmp_path / 'out'}\n"
                      "source_format: folder\nval_per_class: 1\nmin_per_class: 0\nimage_size: 16\n")
    job_id = submit_recipe(recipe, address=ray_head, overrides=["jpeg_quality=80"],
                           env={"HYPERNYM_HOME": str(tmp_path / "home")})
    assert wait_for(job_id, address=ray_head, timeout=240) == "SUCCEEDED", \
        "".join(job_logs(job_id, address=ray_head))
    assert (tmp_path / "out" / "manifest.json").is_file()
    logs = "".join(job_logs(job_id, address=ray_head))
    assert "dataset ready" in logs
    assert job_id in [j.submission_id for j in list_jobs(address=ray_head)]
    # the CLI against the same cluster
    env = {**os.environ, "HYPERNYM_HOME": str(tmp_path / "home")}
    proc = subprocess.run([str(BIN / "hypernym"), "jobs", "status", job_id, "--address",
                           ray_head], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "SUCCEEDED" in proc.stdout, proc.stderr


def test_bad_recipe_is_rejected_before_submission(ray_head, tmp_path):
    before = len(list_jobs(address=ray_head))
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("kind: prepare\nsource: x\noutput: y\nimage_sise: 3\n")
    with pytest.raises(HypernymError, match="image_sise"):
        submit_recipe(recipe, address=ray_head)
    assert len(list_jobs(address=ray_head)) == before


def test_stop_a_running_job(ray_head):
    job_id = submit_command(f"{sys.executable} -c 'import time; time.sleep(300)'",
                            address=ray_head)
    deadline = time.time() + 60
    while job_status(job_id, address=ray_head) != "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    assert stop_job(job_id, address=ray_head)
    assert wait_for(job_id, address=ray_head, timeout=60) == "STOPPED"
    with pytest.raises(HypernymError, match="no job 'raysubmit_nope'"):
        job_status("raysubmit_nope", address=ray_head)


def test_unreachable_cluster_fails_fast_and_clearly():
    started = time.time()
    with pytest.raises(HypernymError, match="no Ray Jobs API at http://127.0.0.1:9"):
        list_jobs(address="http://127.0.0.1:9")
    assert time.time() - started < 30
