"""Start a server process for a test or a benchmark, wait until it answers, stop it.

Every server (moto's S3, `mlflow server`, `mlflow models serve`, `hypernym serve`, a Ray head)
starts in its own process group with its output in a log file, binds a free port on 127.0.0.1,
and counts as ready once an HTTP GET of its readiness URL answers. The wait survives a loaded
machine: a refused connection and a request that times out are both "not yet", retried with
backoff until an overall deadline; a server that exits or never answers fails with the tail of
its log. Stopping ends the whole process group (servers fork workers: gunicorn, uvicorn, Ray's
daemons) and returns once every process of it is gone. The process handling is the local
stack's own (infra/stack/procs.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.stack.procs import free_port, stop_group

__all__ = ["Server", "free_port", "launch", "local_ray", "moto_s3", "routed",
           "start_mlflow_server", "start_ray_head", "start_server", "wait_ready"]

BIN = Path(sys.executable).parent  # the venv's console scripts (mlflow, ray)


@dataclass
class Server:
    """A started server: its process (a process-group leader), base URL and log file."""

    proc: subprocess.Popen
    url: str
    log: Path

    def wait(self, ready_path: str = "/", *, timeout_s: float = 90.0, **kwargs) -> Server:
        """Wait until ``url + ready_path`` answers (`wait_ready`'s ``headers``/``accept`` go
        through); the server is stopped if it never does."""
        try:
            wait_ready(self.url + ready_path, timeout_s=timeout_s, proc=self.proc, log=self.log,
                       **kwargs)
        except BaseException:
            self.stop(timeout_s=5.0)
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``timeout_s``;
        returns once the whole group is gone."""
        stop_group(self.proc.pid, grace_s=timeout_s, proc=self.proc)

    def running(self) -> bool:
        return self.proc.poll() is None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"


def routed(answer: requests.Response) -> bool:
    """A `wait_ready` acceptor for Ray Serve: its proxy answers 404 until the application is
    routed; any other status below 500 (405/400 to a GET) means the application answers."""
    return answer.status_code < 500 and answer.status_code != 404


def wait_ready(url: str, *, timeout_s: float = 90.0, proc: subprocess.Popen | None = None,
               log: Path | None = None, headers: dict[str, str] | None = None,
               accept: Callable[[requests.Response], bool] = lambda r: r.status_code < 500,
               ) -> None:
    """Wait until a GET of ``url`` gets an answer ``accept`` takes (default: any HTTP status
    below 500: the server is up and serving).

    Raises:
        RuntimeError: ``proc`` exited first, or ``timeout_s`` passed; with the server's log.
    """
    deadline = time.monotonic() + timeout_s
    delay, last = 0.1, "no attempt yet"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode} before it was "
                               f"ready; its log:\n{log_tail(log)}")
        left = deadline - time.monotonic()
        try:
            answer = requests.get(url, headers=headers, timeout=max(min(5.0, left), 0.5))
            if accept(answer):
                return
            last = f"HTTP {answer.status_code}"
        except (requests.ConnectionError, requests.Timeout) as exc:  # not up yet, or busy
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + delay > deadline:
            raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s (last: {last}); "
                               f"server log:\n{log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def launch(command: Sequence[str], *, url: str, log: Path,
           env: dict[str, str] | None = None) -> Server:
    """Start ``command`` in its own process group, output to ``log``, without waiting (start
    several, then `Server.wait` for each: their start-ups overlap)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return Server(proc=proc, url=url, log=log)


def start_server(command: Sequence[str], *, url: str, ready_path: str = "/", log: Path,
                 env: dict[str, str] | None = None, timeout_s: float = 90.0,
                 **wait_kwargs) -> Server:
    """`launch` ``command`` and wait until ``url + ready_path`` answers (see `wait_ready`, which
    also takes ``headers`` and ``accept``); the server is stopped if it never does."""
    return launch(command, url=url, log=log, env=env).wait(ready_path, timeout_s=timeout_s,
                                                           **wait_kwargs)


def start_mlflow_server(root: Path, *, app_name: str | None = None,
                  env: dict[str, str] | None = None, timeout_s: float = 240.0) -> Server:
    """`mlflow server` on a free 127.0.0.1 port with one worker: runs in SQLite
    (``root/mlflow.db``), artifacts proxied to ``root/artifacts``, no job runner.

    Args:
        app_name: e.g. ``basic-auth`` (its settings go in ``env``).
        env: added to this process's environment.
    """
    port = free_port()
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    if app_name:
        command += ["--app-name", app_name]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    # timeout: importing mlflow alone took over a minute on a loaded 2-core machine
    return start_server(command, url=f"http://127.0.0.1:{port}", ready_path="/health",
                        log=root / f"mlflow-{port}.log", env=env, timeout_s=timeout_s)


def start_ray_head(temp: Path, *, env: dict[str, str] | None = None, num_cpus: int = 2,
                   headers: dict[str, str] | None = None, timeout_s: float = 240.0,
                   attempts: int = 3) -> Server:
    """A Ray head (``ray start --head --block``) on 127.0.0.1 with its dashboard, ready once
    the Jobs API answers and so does the head's dashboard agent, which runs every submitted job
    (with ``headers``: a token-auth cluster's bearer token). Every port Ray would take by default
    gets a free one, so that two heads (or another test's Ray) on one machine do not fight over
    the agent ports. A port is free when picked, but another Ray starting on the machine may
    take it before this head binds it: a head whose agent does not come up is stopped and
    started again on fresh ports, up to ``attempts`` times. ``temp`` is Ray's temp dir (keep
    it short: Ray's socket paths must stay under 107 bytes); ``env`` replaces this process's
    environment."""
    for attempt in range(1, attempts + 1):
        dash, agent = free_port(), free_port()
        ports = [f"--dashboard-agent-listen-port={agent}"] + [
            f"--{name}={free_port()}" for name in (
                "port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                "metrics-export-port", "ray-client-server-port")]
        command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address",
                   "127.0.0.1", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                   "--include-dashboard", "true", "--num-cpus", str(num_cpus), "--temp-dir",
                   str(temp), "--disable-usage-stats", *ports]
        server = start_server(command, url=f"http://127.0.0.1:{dash}", ready_path="/api/jobs/",
                              log=temp / "head.log", env=env, timeout_s=timeout_s,
                              headers=headers, accept=lambda answer: answer.ok)
        try:
            wait_ready(f"http://127.0.0.1:{agent}/api/healthz", timeout_s=90, proc=server.proc,
                       log=server.log, headers=headers, accept=lambda answer: answer.ok)
            return server
        except RuntimeError as exc:
            server.stop(timeout_s=5.0)
            if attempt == attempts:
                raise
            print(f"Ray head attempt {attempt}: its agent did not come up ({str(exc)[:200]}); "
                  "starting it again on fresh ports", file=sys.stderr)
    raise AssertionError("unreachable")


@contextmanager
def local_ray(*, fresh: bool = False) -> Iterator[None]:
    """A local Ray instance in this process for the block, shut down after. ``address="local"``
    starts a new one, never joining another Ray found running on the machine. ``fresh``: end
    the one this process already runs first (Ray workers take the driver's environment, e.g.
    moto's ``AWS_*`` variables, when Ray starts); otherwise one already running is used."""
    import ray

    if fresh:
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def moto_s3(bucket: str = "hyp") -> Iterator[str]:
    """moto's S3 in a thread of this process on 127.0.0.1 (a free port) with ``bucket`` created,
    and the ``AWS_*`` variables that point boto and s3fs at it, restored afterwards. Yields the
    endpoint URL. (Benchmarks run moto in a process of its own: see `start_server`.)"""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
        yield env["AWS_ENDPOINT_URL"]
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
