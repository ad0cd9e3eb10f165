"""Start a server process for a test or a benchmark, wait until it answers, stop it.

Every server (moto's S3, `mlflow server`, ...) starts in its own process group with its output in
a log file, binds a free port on 127.0.0.1, and counts as ready once an HTTP GET of its readiness
URL answers. The wait survives a loaded machine: a refused connection and a request that times
out are both "not yet", retried with backoff until an overall deadline; a server that exits or
never answers fails with the tail of its log. Stopping ends the whole process group (servers
fork workers: gunicorn, uvicorn).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

__all__ = ["Server", "free_port", "routed", "start_server", "wait_ready"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A started server: its process (a process-group leader), base URL and log file."""

    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group; SIGKILL what is left after ``timeout_s``."""
        for sig, grace in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue

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


def start_server(command: Sequence[str], *, url: str, ready_path: str = "/", log: Path,
                 env: dict[str, str] | None = None, timeout_s: float = 90.0) -> Server:
    """Start ``command`` in its own process group, output to ``log``, and wait until
    ``url + ready_path`` answers (see `wait_ready`); the server is stopped if it never does."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    server = Server(proc=proc, url=url, log=log)
    try:
        wait_ready(url + ready_path, timeout_s=timeout_s, proc=proc, log=log)
    except BaseException:
        server.stop(timeout_s=5.0)
        raise
    return server


@contextmanager
def moto_s3(bucket: str = "hyp") -> Iterator[str]:
    """moto's S3 in a thread of this process on 127.0.0.1 (a free port) with ``bucket`` created,
    and the ``AWS_*`` variables that point boto and s3fs at it, restored afterwards. Yields the
    endpoint URL. (Benchmarks run moto in a process of its own: see `start_server`.)"""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
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
