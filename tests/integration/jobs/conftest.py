"""Real Ray heads (separate processes with the dashboard's Jobs API) for the jobs tests."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import wait_ready

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Head:
    """A running head: its dashboard URL and, for token auth, the file holding the token."""

    url: str
    token_file: Path | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="package")
def start_head() -> Iterator:
    """Start heads with ``start_head(auth=...)``; each is stopped (its process group) at the end.

    ``ray start`` runs in a new session, so the head and every process it spawns (GCS, raylet,
    dashboard, workers) share one process group that is killed as a whole: a global ``ray stop``
    would also end other Ray instances on the machine.
    """
    started: list[tuple[int, Path]] = []

    def start(*, auth: str) -> Head:
        assert auth in ("disabled", "token")
        temp = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp"))  # Ray socket paths < 107 bytes
        port, dash = _free_port(), _free_port()
        # Every fixed default port gets a free one: two heads (or another test's Ray) on one
        # machine would otherwise fight over the agent ports, leaving a head with no job agent.
        ports = [f"--{name}={_free_port()}" for name in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port", "ray-client-server-port")]
        # The head (so every job) runs this venv's python, as a cluster image would.
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": auth,
               "PATH": f"{BIN}:{os.environ['PATH']}"}
        token_file = None
        if auth == "token":  # our own token file: ~/.ray/auth_token is left alone
            token_file = temp / "auth_token"
            token_file.write_text(secrets.token_hex(32))
            env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
            env.pop("RAY_AUTH_TOKEN", None)
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
             "--include-dashboard", "true", "--num-cpus", "2", "--temp-dir", str(temp),
             "--disable-usage-stats", *ports],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        started.append((proc.pid, temp))  # pgid == pid of a session leader
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output
        url = f"http://127.0.0.1:{dash}"
        _wait_for_jobs_api(url, token_file)
        return Head(url=url, token_file=token_file)

    yield start
    # All heads at once: SIGTERM, a short grace (gcs_server and raylet may linger), SIGKILL.
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        for pgid, _ in started:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(_group_alive(g) for g, _ in started) and time.monotonic() < deadline:
            time.sleep(0.2)
    for pgid, temp in started:
        assert not _group_alive(pgid), f"Ray head process group {pgid} survived SIGKILL"
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_jobs_api(url: str, token_file: Path | None) -> None:
    # The Jobs API comes up a little after `ray start` returns.
    headers = {"Authorization": f"Bearer {token_file.read_text()}"} if token_file else {}
    wait_ready(f"{url}/api/jobs/", timeout_s=60, headers=headers, accept=lambda r: r.ok)


@pytest.fixture(scope="package")
def ray_head(start_head) -> str:
    """A head with token auth disabled (what infra/local_cluster.sh starts by default)."""
    return start_head(auth="disabled").url
