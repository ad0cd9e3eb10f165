"""The local multi-host rig (infra/local_stack.sh) as a fixture, and the client's tools on it:
`hypernym` run as a process (as a user runs it), Ray jobs followed, which node runs a process.

The rig needs root (`unshare --mount`): where that is not permitted, its tests skip, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack.local_stack import Stack
from infra.stack.nodes import namespace_pids, unshare_problem


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Stack]:
    """A rig with two one-CPU worker nodes. Every node hides /tmp (pytest's tmp folders, so the
    client's home and files) and the repo's .hypernym; ``<state>/shared`` is the one folder all
    nodes see: the tests' sample traces (a stand-in for a log collector)."""
    problem = unshare_problem()
    if problem:
        pytest.skip(problem)
    state = tmp_path_factory.mktemp("rig")
    shared = state / "shared"
    shared.mkdir()
    hide = [Path.cwd() / ".hypernym"]
    if os.environ.get("HYPERNYM_HOME"):
        hide.append(Path(os.environ["HYPERNYM_HOME"]))
    started = time.perf_counter()
    stack = Stack.up(state, workers=2, hide=hide, shared=shared)
    print(f"\nrig up in {time.perf_counter() - started:.0f} s {stack.info['timings_s']}; "
          f"state and logs: {state}")
    try:
        yield stack
    finally:
        print(f"\nrig logs: {state}/nodes/*.log, {state}/nodes/*-ray/session_*/logs, "
              f"{state}/s3.log, {state}/tracking/mlflow/server.log")
        groups = stack.process_groups()
        stack.down()
        left = stack.leftovers(groups)
        assert not left, f"the rig left processes behind: {left}"


def hypernym(*args: str, env: dict[str, str] | None = None, timeout: float = 600
             ) -> subprocess.CompletedProcess:
    """The `hypernym` command in a process, with this environment (plus ``env``)."""
    return subprocess.run([sys.executable, "-m", "hypernym", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def hypernym_async(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """`hypernym` as in `hypernym`, in a background thread: ``.result()`` waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(hypernym, *args, env=env, timeout=timeout)
    pool.shutdown(wait=False)
    return future


def node_of(stack: Stack, pid: int) -> str:
    """The name of the rig node whose namespace holds process ``pid``."""
    for name in stack.info["nodes"]:
        if pid in namespace_pids(stack.node(name)):
            return name
    raise AssertionError(f"process {pid} runs on no node of the rig")


def node_sees(stack: Stack, name: str, path: Path) -> bool:
    """Whether ``path`` exists in node ``name``'s view of the filesystem."""
    out = subprocess.run(["nsenter", "--mount", "--target", str(stack.node(name).pgid),
                          "test", "-e", str(path)], timeout=30)
    return out.returncode == 0


def wait_job(job_id: str, *, timeout_s: float) -> str:
    """The job's final status (SUCCEEDED, FAILED, STOPPED)."""
    from hypernym.jobs.submit import wait_for

    return wait_for(job_id, timeout=timeout_s, poll=1.0)
