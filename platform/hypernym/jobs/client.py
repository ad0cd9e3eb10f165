"""A Ray Jobs API client that says what is wrong: address, token auth and error translation.

Address: an explicit one, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS`` (the order of
Ray's own ``ray job`` CLI). An ``http(s)://`` URL is used as is; a cluster address such as
``HEAD:6379`` or ``ray://HEAD:10001`` means the dashboard on that host's default port 8265;
``auto``, ``local`` or nothing means the dashboard on this machine.

Token authentication (Ray 2.59+): with ``RAY_AUTH_MODE=token`` the token comes from
``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (Ray's own order);
with the mode unset a token is sent only if one of those exists (as ``ray.init`` does); with
``RAY_AUTH_MODE=disabled`` none is sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from hypernym.errors import HypernymError

__all__ = ["DEFAULT_ADDRESS", "call", "errors", "make_client", "resolve_address"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DASHBOARD_PORT = 8265
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
_CONNECT_TIMEOUT_S = 5.0
NO_CLUSTER_FIX = (
    "start one with `infra/local_cluster.sh start` or `ray start --head --dashboard-host "
    "0.0.0.0`, or set RAY_ADDRESS=http://HEAD:8265"
)
TOKEN_FIX = (
    "set RAY_AUTH_MODE=token and give the cluster's token (`ray get-auth-token` on the head "
    "node) as RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token"
)


def resolve_address(address: str | None = None) -> str:
    """The dashboard URL to talk to (see the module docstring for the order)."""
    value = address or next((os.environ[k] for k in _ADDRESS_ENV if os.environ.get(k)), "")
    value = value.strip().rstrip("/")
    if value.startswith(("http://", "https://")):
        return value
    if value in ("", "auto", "local"):
        return DEFAULT_ADDRESS
    # A GCS or Ray Client address. Ray would look the dashboard up through the GCS, which takes
    # ~40 s to fail on a wrong address; the dashboard's default port on the same host is the
    # fast, usual answer, and a wrong guess ends in an error that names the fix.
    has_scheme = "://" in value
    host = None
    if not has_scheme or value.startswith("ray://"):
        host = urlsplit(value if has_scheme else f"ray://{value}").hostname
    if not host or not re.fullmatch(r"[\w.\-:]+", host):
        raise HypernymError(
            f"Ray dashboard address must look like http://HOST:8265 (or a cluster address "
            f"HOST:6379 / ray://HOST:10001), got {value!r}: pass --address or set RAY_ADDRESS")
    return f"http://{f'[{host}]' if ':' in host else host}:{DASHBOARD_PORT}"


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
        return {"Authorization": ""}
    token = _local_token()
    if token is None:
        if mode == "token":
            raise HypernymError(f"RAY_AUTH_MODE=token but no token was found: {TOKEN_FIX}")
        # An explicit empty header, not none: Ray adds its own when the caller gave none, from
        # a token loader it caches per process (so a token read by an earlier call, or for
        # another cluster, would be sent). Clusters without auth ignore the header.
        return {"Authorization": ""}
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
        raise HypernymError(f"no Ray Jobs API at {url} ({exc}): {NO_CLUSTER_FIX}") from None


@contextlib.contextmanager
def errors(url: str, job_id: str | None = None) -> Iterator[None]:
    """Turn Ray's and requests' exceptions into one HypernymError that says how to fix it."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        if "Authentication failed" in str(exc):  # HTTP 403: a token was sent and refused
            raise HypernymError(f"the Ray cluster at {url} rejected the token: {TOKEN_FIX}") \
                from None
        raise HypernymError(f"the Ray cluster at {url} requires a token: {TOKEN_FIX}") from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise HypernymError(f"no Ray Jobs API at {url} ({exc}): {NO_CLUSTER_FIX}") from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("does not exist" in text or "status code 404" in text):
            raise HypernymError(
                f"no job {job_id!r} on the cluster at {url}: see `hypernym jobs list"
                f"{'' if url == DEFAULT_ADDRESS else ' --address ' + url}`"
            ) from None
        if "status code 404" in text or "Version check" in text:
            raise HypernymError(f"no Ray Jobs API at {url} ({text[:200]}): {NO_CLUSTER_FIX}") \
                from None
        raise


@contextlib.contextmanager
def _without_address_env() -> Iterator[None]:
    # JobSubmissionClient lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address it is
    # given (ray.dashboard.utils.get_address_for_submission_client), so `--address B` would
    # silently talk to A. Hide them while the client resolves its URL.
    saved = {k: os.environ.pop(k) for k in _ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def make_client(address: str | None = None):
    """A connected ``JobSubmissionClient`` for the resolved address (version checked)."""
    from ray.job_submission import JobSubmissionClient

    from hypernym.runtime import route_library_logs

    route_library_logs()  # Ray's INFO lines (uploads, websocket closed) to the log file
    url = resolve_address(address)
    _probe(url)
    with errors(url), _without_address_env():
        client = JobSubmissionClient(url, headers=_auth_headers())
    assert client.get_address() == url, (client.get_address(), url)
    client.hypernym_url = url  # for the error messages of later calls
    return client


def call(client, method: str, job_id: str | None = None, **kwargs):
    """``client.method(job_id, **kwargs)`` with errors translated (see `errors`)."""
    with errors(client.hypernym_url, job_id):
        fn = getattr(client, method)
        return fn(job_id, **kwargs) if job_id is not None else fn(**kwargs)
