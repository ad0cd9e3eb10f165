"""Run recipes on a Ray cluster through Ray's Job Submission API.

A submitted recipe runs ``python -m hypernym run recipe.yaml`` on the cluster: the same library
call as a local run. The recipe is validated here first, so a bad one is never sent; the resolved
recipe travels in the job's working_dir.

Paths in a recipe must exist where the job runs: local paths are made absolute (right for a
cluster on this machine or with a shared filesystem); ``s3://`` URIs are the portable choice.
Addresses and token authentication are handled in `hypernym.jobs.client`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from hypernym.config import load_recipe
from hypernym.errors import HypernymError
from hypernym.jobs.client import DEFAULT_ADDRESS, call, errors, make_client, resolve_address
from hypernym.settings import CREDENTIALS, is_secret

__all__ = [
    "DEFAULT_ADDRESS",
    "ENTRYPOINT",
    "FORWARD_WARNING",
    "TERMINAL",
    "job_env_vars",
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

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
ENTRYPOINT = "python -m hypernym run recipe.yaml"
log = logging.getLogger(__name__)
# Settings that travel with a job: where things are, never who may touch them. A cluster takes
# credentials from its own environment (instance roles, Kubernetes Secrets, its env), because a
# job's runtime_env is shown to anyone who can see the cluster (job info, the dashboard).
_PASS_THROUGH = frozenset({"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                           "AWS_DEFAULT_REGION", "AWS_REGION"})
FORWARD_WARNING = (
    "forwarding credentials ({names}) in the job's runtime_env: anyone who can see the cluster "
    "can read them in the job's info and the dashboard. Prefer giving the cluster its own "
    "credentials (instance roles, Kubernetes Secrets, the nodes' environment).")


def job_env_vars(extra: dict[str, str] | None, *, forward_credentials: bool = False
              ) -> dict[str, str]:
    """The job's env_vars: non-secret settings of this shell, ``extra``, and only with
    ``forward_credentials`` the credentials (with a warning)."""
    passed = {k: v for k, v in os.environ.items()
              if (k in _PASS_THROUGH or k.startswith("HYPERNYM_")) and not is_secret(k)}
    extra = dict(extra or {})
    named = sorted(k for k in extra if is_secret(k))
    if named and not forward_credentials:
        raise HypernymError(
            f"{', '.join(named)} would be visible to anyone who can see the cluster: give the "
            "cluster its own credentials, or pass forward_credentials=True "
            "(hypernym submit --forward-credentials) to send them anyway")
    uri = passed.get("MLFLOW_TRACKING_URI")
    if uri and urlsplit(uri).password and not forward_credentials:
        parts = urlsplit(uri)  # user:password@ in the URI is a credential too
        passed["MLFLOW_TRACKING_URI"] = urlunsplit(parts._replace(
            netloc=parts.netloc.rsplit("@", 1)[1]))
    if forward_credentials:
        found = {k: v for k, v in os.environ.items() if k in CREDENTIALS
                 or (k.startswith(("AWS_", "MLFLOW_", "HYPERNYM_")) and is_secret(k))}
        names = sorted({*found, *named})
        if names:
            log.warning(FORWARD_WARNING.format(names=", ".join(names)))
        passed.update(found)
    return {**passed, **extra}


def _absolute(value: str | None) -> str | None:
    if value is None or "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def _with_absolute_paths(recipe):
    """The recipe with its local paths made absolute (the job runs in another directory)."""
    if recipe.kind == "prepare":
        return recipe.model_copy(update={
            key: _absolute(getattr(recipe, key)) for key in ("source", "output", "hierarchy")})
    data = recipe.data.model_copy(update={"path": _absolute(recipe.data.path)})
    return recipe.model_copy(update={"data": data})


def _submit(client, **kwargs) -> str:
    # A head that just started answers the Jobs API before its job agent is up.
    deadline = time.monotonic() + 60
    while True:
        try:
            return call(client, "submit_job", **kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def submit_recipe(recipe_path: str | Path, *, address: str | None = None,
                  overrides: Sequence[str] = (), upload_package: bool = False,
                  env: dict[str, str] | None = None, wait: bool = False,
                  forward_credentials: bool = False, resume: str | None = None) -> str:
    """Validate a recipe here, then run it on the cluster with ``hypernym run``.

    Local paths in the recipe (``source``, ``output``, ``hierarchy``, ``data.path``) are made
    absolute here. On a remote cluster they must exist at those paths there (a shared
    filesystem); ``s3://`` URIs are the portable choice.

    Args:
        recipe_path: a recipe YAML file.
        address: the Ray dashboard URL (see `hypernym.jobs.client.resolve_address`).
        overrides: ``key.path=value`` overrides, as ``--set`` takes them.
        upload_package: ship this installed hypernym package with the job (``py_modules``), for
            a cluster whose image has the dependencies but not hypernym.
        env: extra environment variables for the job. Beside them, the settings of this shell
            travel (MLFLOW_TRACKING_URI, HYPERNYM_*, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION),
            never its credentials: the cluster uses its own.
        wait: block until the job ends.
        forward_credentials: also send this shell's credentials (AWS keys, MLflow username and
            password, any *_SECRET*/*_TOKEN*/*_PASSWORD*) and secret-named ``env`` entries; they
            become readable in the job's info, so a warning is logged.
        resume: an MLflow run id of this recipe to continue from its newest whole checkpoint
            (checked here first: the run exists, did not finish, and has no live driver).

    Returns:
        The job's submission id.

    Raises:
        HypernymError: the recipe is invalid (nothing is sent), ``env`` holds a credential
            without ``forward_credentials``, the cluster cannot be reached or refuses the
            token, or (``wait``) the job did not succeed.
    """
    recipe = load_recipe(recipe_path, list(overrides))  # a bad recipe fails before any upload
    recipe = _with_absolute_paths(recipe)
    entrypoint = ENTRYPOINT
    if resume:
        from hypernym.runs.resume import check_resumable

        check_resumable(resume, recipe)  # a wrong id fails here, not on the cluster
        entrypoint = f"{ENTRYPOINT} --resume {shlex.quote(resume)}"
    env_vars = job_env_vars(env, forward_credentials=forward_credentials)
    client = make_client(address)
    runtime_env: dict = {"env_vars": env_vars}
    if upload_package:
        import hypernym

        runtime_env["py_modules"] = [str(Path(hypernym.__file__).parent)]
    # submit_job packages and uploads working_dir before it returns: the directory can go.
    with tempfile.TemporaryDirectory(prefix="hypernym-job-") as workdir:
        (Path(workdir) / "recipe.yaml").write_text(
            yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        job_id = _submit(
            client,
            entrypoint=entrypoint,
            runtime_env={**runtime_env, "working_dir": workdir},
            metadata={"hypernym.kind": recipe.kind, "hypernym.recipe": str(recipe_path),
                      **({"hypernym.resume": resume} if resume else {})},
        )
    if wait:
        _wait(client, job_id, timeout=None, poll=1.0, must_succeed=True)
    return job_id


def submit_command(entrypoint: str, *, address: str | None = None,
                   env: dict[str, str] | None = None, forward_credentials: bool = False) -> str:
    """Submit a raw shell entrypoint (tools and tests; recipes go through `submit_recipe`).
    Environment as in `submit_recipe`."""
    env_vars = job_env_vars(env, forward_credentials=forward_credentials)
    return _submit(make_client(address), entrypoint=entrypoint,
                   runtime_env={"env_vars": env_vars})


# --------------------------------------------------------------------------- following jobs


def job_status(job_id: str, *, address: str | None = None) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED (`job_info` has the details)."""
    return str(call(make_client(address), "get_job_status", job_id).value)


def job_info(job_id: str, *, address: str | None = None):
    """Ray's ``JobDetails`` for the job: status, message, entrypoint, times, metadata."""
    return call(make_client(address), "get_job_info", job_id)


def list_jobs(*, address: str | None = None) -> list:
    """Every job the cluster knows (``JobDetails``), oldest first."""
    return sorted(call(make_client(address), "list_jobs"), key=lambda j: j.start_time or 0)


def stop_job(job_id: str, *, address: str | None = None) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    return bool(call(make_client(address), "stop_job", job_id))


def wait_for(job_id: str, *, address: str | None = None, timeout: float | None = None,
             poll: float = 1.0) -> str:
    """Block until the job ends; returns SUCCEEDED, FAILED or STOPPED."""
    return _wait(make_client(address), job_id, timeout=timeout, poll=poll, must_succeed=False)


def _wait(client, job_id: str, *, timeout: float | None, poll: float, must_succeed: bool) -> str:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = str(call(client, "get_job_status", job_id).value)
        if status in TERMINAL:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise HypernymError(
                f"job {job_id} still {status} after {timeout:.0f}s: follow it with "
                f"`hypernym jobs logs {job_id} --follow` or stop it with `hypernym jobs stop`")
        time.sleep(poll)
    if must_succeed and status != "SUCCEEDED":
        info = call(client, "get_job_info", job_id)
        tail = "\n".join(call(client, "get_job_logs", job_id).splitlines()[-20:])
        raise HypernymError(
            f"job {job_id} {status}: {info.message or ''}\n{tail}\n"
            f"full output: `hypernym jobs logs {job_id}`")
    return status


def job_logs(job_id: str, *, address: str | None = None, follow: bool = False) -> Iterator[str]:
    """The job's output so far, or (``follow``) chunks streamed until the job ends."""
    client = make_client(address)
    if not follow:
        yield call(client, "get_job_logs", job_id)
        return
    call(client, "get_job_status", job_id)  # a clear error for an unknown id, before streaming
    # tail_job_logs is async only; drive it from a private loop so callers stay synchronous.
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                with errors(client.hypernym_url, job_id):
                    chunk = loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        loop.run_until_complete(stream.aclose())  # closes the websocket and its session
        loop.close()
