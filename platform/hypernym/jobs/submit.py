"""Run recipes on a Ray cluster through Ray's Job Submission API.

A submitted recipe runs ``python -m hypernym run recipe.yaml`` on the cluster: the same library
call as a local run. The recipe is validated here first, so a bad one is never sent; the resolved
recipe travels in the job's working_dir.

Paths in a recipe must exist where the job runs: local paths are made absolute (right for a
cluster on this machine or with a shared filesystem); ``s3://`` URIs are the portable choice.
Token authentication (Ray 2.59+) is Ray's own: set ``RAY_AUTH_MODE=token`` and provide the token
(``~/.ray/auth_token`` or ``RAY_AUTH_TOKEN``) and the client sends it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from hypernym.config import load_recipe
from hypernym.errors import HypernymError

__all__ = [
    "TERMINAL",
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
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_PASS_THROUGH = ("MLFLOW_TRACKING_URI", "HYPERNYM_HOME", "HYPERNYM_ARTIFACT_ROOT")


def resolve_address(address: str | None = None) -> str:
    """Explicit address, else an http(s) RAY_ADDRESS, else the local dashboard."""
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "")
    return env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 - connection, auth and version errors alike
        raise HypernymError(
            f"no Ray Jobs API at {url} ({str(exc).splitlines()[0][:200]}). Start a cluster with "
            "`infra/local_cluster.sh start` or `ray start --head --dashboard-host 0.0.0.0`, or "
            "set RAY_ADDRESS=http://HEAD:8265; with token auth set RAY_AUTH_MODE=token"
        ) from None


def _call(fn, job_id: str, *args):
    try:
        return fn(job_id, *args)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise HypernymError(f"no job {job_id!r} on this cluster; see `hypernym jobs list`") \
                from None
        raise


def _env_vars(extra: dict[str, str] | None) -> dict[str, str]:
    passed = {k: v for k, v in os.environ.items()
              if k in _PASS_THROUGH or k.startswith("AWS_")}
    return {**passed, **(extra or {})}


def _absolute(value: str) -> str:
    return value if "://" in value else str(Path(value).expanduser().resolve())


def _submit(client, **kwargs) -> str:
    # A head that just started answers the Jobs API before its job agent is up.
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def submit_recipe(recipe_path: str | Path, *, address: str | None = None,
                  overrides: Sequence[str] = (), upload_package: bool = False,
                  env: dict[str, str] | None = None) -> str:
    """Validate ``recipe_path`` here, then run it on the cluster. Returns the job id."""
    recipe = load_recipe(recipe_path, list(overrides))
    if recipe.kind == "prepare":
        recipe = recipe.model_copy(update={"source": _absolute(recipe.source),
                                           "output": _absolute(recipe.output)})
    else:
        data = recipe.data.model_copy(update={"path": _absolute(recipe.data.path)})
        recipe = recipe.model_copy(update={"data": data})
    client = _client(address)
    workdir = Path(tempfile.mkdtemp(prefix="hypernym-job-"))
    (workdir / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    runtime_env: dict = {"working_dir": str(workdir), "env_vars": _env_vars(env)}
    if upload_package:  # for a cluster image with the dependencies but without hypernym
        import hypernym

        runtime_env["py_modules"] = [str(Path(hypernym.__file__).parent)]
    return _submit(
        client,
        entrypoint="python -m hypernym run recipe.yaml",
        runtime_env=runtime_env,
        metadata={"hypernym.kind": recipe.kind, "hypernym.recipe": str(recipe_path)},
    )


def submit_command(entrypoint: str, *, address: str | None = None,
                   env: dict[str, str] | None = None) -> str:
    """Submit a raw shell entrypoint (tools and tests; recipes go through submit_recipe)."""
    return _submit(_client(address), entrypoint=entrypoint,
                   runtime_env={"env_vars": _env_vars(env)})


def job_status(job_id: str, *, address: str | None = None) -> str:
    return str(_call(_client(address).get_job_status, job_id).value)


def list_jobs(*, address: str | None = None) -> list:
    return sorted(_client(address).list_jobs(), key=lambda j: j.start_time or 0)


def stop_job(job_id: str, *, address: str | None = None) -> bool:
    return bool(_call(_client(address).stop_job, job_id))


def wait_for(job_id: str, *, address: str | None = None, timeout: float | None = None,
             poll: float = 1.0) -> str:
    """Block until the job ends; returns SUCCEEDED, FAILED or STOPPED."""
    client = _client(address)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = str(_call(client.get_job_status, job_id).value)
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise HypernymError(f"job {job_id} still {status} after {timeout:.0f}s")
        time.sleep(poll)


def job_logs(job_id: str, *, address: str | None = None, follow: bool = False) -> Iterator[str]:
    """The job's output so far, or (follow) streamed until the job ends."""
    client = _client(address)
    if not follow:
        yield _call(client.get_job_logs, job_id)
        return
    _call(client.get_job_status, job_id)  # a clear error for an unknown id, before streaming
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()
