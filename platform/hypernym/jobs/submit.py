"""Run recipes on a Ray cluster through Ray's Job Submission API.

A submitted recipe runs ``python -m hypernym run recipe.yaml`` on the cluster: the same library
call as a local run. The recipe is validated here first, so a bad one is never sent; the resolved
recipe travels in the job's working_dir.

Paths in a recipe must exist where the job runs: local paths are made absolute (right for a
cluster on this machine or with a shared filesystem); ``s3://`` URIs are the portable choice.

Token authentication (Ray 2.59+): with ``RAY_AUTH_MODE=token`` the token comes from
``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (Ray's own order);
with the mode unset a token is sent only if one of those exists (as ``ray.init`` does); with
``RAY_AUTH_MODE=disabled`` none is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from hypernym.config import load_recipe
from hypernym.errors import HypernymError

__all__ = [
    "DEFAULT_ADDRESS",
    "TERMINAL",
    "job_info",
    "job_logs",
    "job_status",
    "list_jobs",
    "resolve_address",
    "stop_job",
    "submit_command",
    "submit_recipe",
    "wait_for",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
ENTRYPOINT = "python -m hypernym run recipe.yaml"
_PASS_THROUGH = ("MLFLOW_TRACKING_URI", "HYPERNYM_HOME", "HYPERNYM_ARTIFACT_ROOT")
_CONNECT_TIMEOUT_S = 5.0
_NO_CLUSTER_FIX = (
    "start one with `infra/local_cluster.sh start` or `ray start --head --dashboard-host "
    "0.0.0.0`, or set RAY_ADDRESS=http://HEAD:8265"
)
_TOKEN_FIX = (
    "set RAY_AUTH_MODE=token and give the cluster's token (`ray get-auth-token` on the head "
    "node) as RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token"
)


def resolve_address(address: str | None = None) -> str:
    """Explicit address, else an http(s) RAY_ADDRESS, else the local dashboard."""
    if address:
        return address.rstrip("/")
    env = os.environ.get("RAY_ADDRESS", "")
    return env.rstrip("/") if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS


# --------------------------------------------------------------------------- client & errors


def _local_token() -> str | None:
    """The token Ray itself would use: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        if named:
            raise HypernymError(
                f"RAY_AUTH_TOKEN_PATH={named} cannot be read: point it at the file holding the "
                "cluster's token, or unset it"
            ) from None
        return None


def _auth_headers() -> dict[str, str]:
    # Built here rather than left to Ray: Ray caches the auth mode per process when its config
    # is first read, and a client should follow the environment at call time.
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return {}
    token = _local_token()
    if token is None:
        if mode == "token":
            raise HypernymError(f"RAY_AUTH_MODE=token but no token was found: {_TOKEN_FIX}")
        return {}
    return {"Authorization": f"Bearer {token}"}


def _probe(url: str) -> None:
    # requests has no connect timeout by default: a firewalled head would hang for minutes.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HypernymError(f"Ray dashboard address must look like http://HOST:8265, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise HypernymError(f"no Ray Jobs API at {url} ({exc}): {_NO_CLUSTER_FIX}") from None


@contextlib.contextmanager
def _errors(url: str, job_id: str | None = None) -> Iterator[None]:
    """Turn Ray's and requests' exceptions into one HypernymError that says how to fix it."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        if "Authentication failed" in str(exc):  # HTTP 403: a token was sent and refused
            raise HypernymError(f"the Ray cluster at {url} rejected the token: {_TOKEN_FIX}") \
                from None
        raise HypernymError(f"the Ray cluster at {url} requires a token: {_TOKEN_FIX}") from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise HypernymError(f"no Ray Jobs API at {url} ({exc}): {_NO_CLUSTER_FIX}") from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("does not exist" in text or "status code 404" in text):
            raise HypernymError(
                f"no job {job_id!r} on the cluster at {url}: see `hypernym jobs list"
                f"{'' if url == DEFAULT_ADDRESS else ' --address ' + url}`"
            ) from None
        if "status code 404" in text or "Version check" in text:
            raise HypernymError(f"no Ray Jobs API at {url} ({text[:200]}): {_NO_CLUSTER_FIX}") \
                from None
        raise


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    _probe(url)
    with _errors(url):
        client = JobSubmissionClient(url, headers=_auth_headers())
    client.hypernym_url = url  # for error messages of later calls
    return client


def _call(client, method: str, job_id: str | None = None, **kwargs):
    with _errors(client.hypernym_url, job_id):
        fn = getattr(client, method)
        return fn(job_id, **kwargs) if job_id is not None else fn(**kwargs)


# --------------------------------------------------------------------------- submission


def _env_vars(extra: dict[str, str] | None) -> dict[str, str]:
    passed = {k: v for k, v in os.environ.items() if k in _PASS_THROUGH or k.startswith("AWS_")}
    return {**passed, **(extra or {})}


def _absolute(value: str) -> str:
    return value if "://" in value else str(Path(value).expanduser().resolve())


def _submit(client, **kwargs) -> str:
    # A head that just started answers the Jobs API before its job agent is up.
    deadline = time.monotonic() + 60
    while True:
        try:
            return _call(client, "submit_job", **kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def submit_recipe(recipe_path: str | Path, *, address: str | None = None,
                  overrides: Sequence[str] = (), upload_package: bool = False,
                  env: dict[str, str] | None = None) -> str:
    """Validate a recipe here, then run it on the cluster with ``hypernym run``.

    Args:
        recipe_path: a recipe YAML file.
        address: the Ray dashboard URL (see `resolve_address`).
        overrides: ``key.path=value`` overrides, as ``--set`` takes them.
        upload_package: ship this installed hypernym package with the job (``py_modules``), for
            a cluster whose image has the dependencies but not hypernym.
        env: extra environment variables for the job (beside MLFLOW_TRACKING_URI,
            HYPERNYM_HOME, HYPERNYM_ARTIFACT_ROOT and AWS_*, passed through when set here).

    Returns:
        The job's submission id.
    """
    recipe = load_recipe(recipe_path, list(overrides))  # a bad recipe fails before any upload
    if recipe.kind == "prepare":
        recipe = recipe.model_copy(update={"source": _absolute(recipe.source),
                                           "output": _absolute(recipe.output)})
    else:
        data = recipe.data.model_copy(update={"path": _absolute(recipe.data.path)})
        recipe = recipe.model_copy(update={"data": data})
    client = _client(address)
    runtime_env: dict = {"env_vars": _env_vars(env)}
    if upload_package:
        import hypernym

        runtime_env["py_modules"] = [str(Path(hypernym.__file__).parent)]
    # submit_job packages and uploads working_dir before it returns: the directory can go.
    with tempfile.TemporaryDirectory(prefix="hypernym-job-") as workdir:
        (Path(workdir) / "recipe.yaml").write_text(
            yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        return _submit(
            client,
            entrypoint=ENTRYPOINT,
            runtime_env={**runtime_env, "working_dir": workdir},
            metadata={"hypernym.kind": recipe.kind, "hypernym.recipe": str(recipe_path)},
        )


def submit_command(entrypoint: str, *, address: str | None = None,
                   env: dict[str, str] | None = None) -> str:
    """Submit a raw shell entrypoint (tools and tests; recipes go through `submit_recipe`)."""
    return _submit(_client(address), entrypoint=entrypoint,
                   runtime_env={"env_vars": _env_vars(env)})


# --------------------------------------------------------------------------- following jobs


def job_status(job_id: str, *, address: str | None = None) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    return str(_call(_client(address), "get_job_status", job_id).value)


def job_info(job_id: str, *, address: str | None = None):
    """Ray's ``JobDetails`` for the job: status, message, entrypoint, times, metadata."""
    return _call(_client(address), "get_job_info", job_id)


def list_jobs(*, address: str | None = None) -> list:
    """Every job the cluster knows (``JobDetails``), oldest first."""
    return sorted(_call(_client(address), "list_jobs"), key=lambda j: j.start_time or 0)


def stop_job(job_id: str, *, address: str | None = None) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    return bool(_call(_client(address), "stop_job", job_id))


def wait_for(job_id: str, *, address: str | None = None, timeout: float | None = None,
             poll: float = 1.0) -> str:
    """Block until the job ends; returns SUCCEEDED, FAILED or STOPPED."""
    client = _client(address)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = str(_call(client, "get_job_status", job_id).value)
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise HypernymError(
                f"job {job_id} still {status} after {timeout:.0f}s: follow it with "
                f"`hypernym jobs logs {job_id} --follow` or stop it with `hypernym jobs stop`")
        time.sleep(poll)


def job_logs(job_id: str, *, address: str | None = None, follow: bool = False) -> Iterator[str]:
    """The job's output so far, or (``follow``) chunks streamed until the job ends."""
    client = _client(address)
    if not follow:
        yield _call(client, "get_job_logs", job_id)
        return
    _call(client, "get_job_status", job_id)  # a clear error for an unknown id, before streaming
    # tail_job_logs is async only; drive it from a private loop so callers stay synchronous.
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                with _errors(client.hypernym_url, job_id):
                    chunk = loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        loop.run_until_complete(stream.aclose())  # closes the websocket and its session
        loop.close()
