"""Real Ray heads (separate processes with the dashboard's Jobs API) for the jobs tests."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.stack.procs import stop_group
from tests.servers import Server, start_ray_head

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Head:
    """A running head: its dashboard URL and, for token auth, the file holding the token."""

    url: str
    token_file: Path | None = None


@pytest.fixture(scope="package")
def start_head() -> Iterator:
    """Start heads with ``start_head(auth=...)`` (`tests.servers.start_ray_head`); each is
    stopped at the end, its whole process group: a global ``ray stop`` would also end other Ray
    instances on the machine."""
    started: list[tuple[Server, Path]] = []

    def start(*, auth: str) -> Head:
        assert auth in ("disabled", "token")
        temp = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp"))  # Ray socket paths < 107 bytes
        # The head (so every job) runs this venv's python, as a cluster image would.
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": auth,
               "PATH": f"{BIN}:{os.environ['PATH']}"}
        token_file, headers = None, None
        if auth == "token":  # our own token file: ~/.ray/auth_token is left alone
            token_file = temp / "auth_token"
            token_file.write_text(secrets.token_hex(32))
            env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
            env.pop("RAY_AUTH_TOKEN", None)
            headers = {"Authorization": f"Bearer {token_file.read_text()}"}
        server = start_ray_head(temp, env=env, headers=headers)
        started.append((server, temp))
        return Head(url=server.url, token_file=token_file)

    yield start
    for server, temp in started:  # a short grace: gcs_server and raylet may linger
        server.stop(timeout_s=3)
        _stop_job_drivers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_job_drivers(temp: Path) -> None:
    """Kill the process groups of jobs of this head that outlived it. A job's driver runs in
    its own session, in a working directory under the head's temp dir, so stopping the head's
    group leaves it running: a job stopped while its runtime environment was still being set up
    was seen to start its driver anyway, which then waited for the head that was gone."""
    groups = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd").startswith(f"{temp}/"):
                groups.add(os.getpgid(int(proc.name)))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    for pgid in groups:
        stop_group(pgid, first=signal.SIGKILL)


@pytest.fixture(scope="package")
def ray_head(start_head) -> str:
    """A head with token auth disabled (what infra/local_cluster.sh starts by default)."""
    return start_head(auth="disabled").url
