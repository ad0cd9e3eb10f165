"""Checks that run before any Ray work: is every location of a run reachable from every node,
and does the tracking server accept our credentials?

A real cluster's hosts share nothing but the network. A local path (the embedded
``<home>/runs``, a ``sqlite:///`` tracking database, a ``file://`` artifact root, a dataset on
this disk) exists only on the host that wrote the settings: on a cluster of several nodes a
worker elsewhere would write checkpoints nobody reads back, or log into a database that does not
exist on its host. Such a run is refused before it starts, with the setting to change. A
filesystem mounted at the same path on every node (NFS) is declared with
``HYPERNYM_SHARED_FS=/mnt/shared``; local paths under it are then accepted.

The rule itself (`unreachable`, `refusal`) is pure; `check_cluster` asks Ray how many nodes
are alive, `check_tracking` makes one cheap call through the tracking adapter.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hypernym.errors import HypernymError
from hypernym.settings import SHARED_FS_ENV, STORAGE_ENV, Settings

__all__ = [
    "Location",
    "check_cluster",
    "check_tracking",
    "check_training",
    "local_path",
    "prepare_locations",
    "redact",
    "refusal",
    "training_locations",
    "unreachable",
]

# MLflow tracking URIs that name a database or folder opened by the client process itself.
_LOCAL_TRACKING = ("sqlite:", "file:")


@dataclass(frozen=True)
class Location:
    """One place a run reads or writes, and the setting that moves it.

    Attributes:
        what: what lives there, for the message ("checkpoint storage").
        uri: the path or URI as configured.
        setting: the setting to change (``HYPERNYM_STORAGE``, ``data.path``...).
        fix: an example of a value every node can reach.
    """

    what: str
    uri: str
    setting: str
    fix: str


def local_path(uri: str, *, tracking: bool = False) -> Path | None:
    """The path on this host that ``uri`` names, or None if it is reached over the network.

    Args:
        uri: a path, a ``file:`` URI, a URI with a network scheme (``s3://``, ``http://``...),
            or with ``tracking`` an MLflow tracking URI (``sqlite:///``, ``file:``, a bare path
            are local; ``http(s)://``, ``postgresql://``, ``databricks`` are not).
    """
    uri = str(uri).strip()
    if tracking and uri.startswith("sqlite:"):
        # SQLAlchemy: sqlite:////abs/path is absolute, sqlite:///rel/path relative to the cwd.
        path = uri.removeprefix("sqlite:").removeprefix("//").removeprefix("/")
        return Path(path).resolve() if path and path != ":memory:" else Path.cwd()
    if uri.startswith("file:"):
        return Path("/" + urlsplit(uri).path.lstrip("/")).resolve()
    if "://" in uri or (tracking and uri == "databricks"):
        return None
    return Path(uri).expanduser().resolve()


def _shared(path: Path, shared_fs: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in shared_fs)


def unreachable(locations: Sequence[Location], shared_fs: Sequence[Path]) -> list[Location]:
    """The locations only this host can reach: local paths outside every shared mount."""
    out = []
    for loc in locations:
        path = local_path(loc.uri, tracking=loc.setting == "MLFLOW_TRACKING_URI")
        if path is not None and not _shared(path, shared_fs):
            out.append(loc)
    return out


def training_locations(settings: Settings, *, data_path: str) -> list[Location]:
    """Everything a training worker touches: checkpoints, tracking, artifacts, the dataset."""
    locs = [
        Location("checkpoint storage", settings.storage, STORAGE_ENV, "s3://BUCKET/PREFIX"),
        Location("MLflow tracking", settings.tracking_uri, "MLFLOW_TRACKING_URI",
                 "http://TRACKING-SERVER:5000 (with MLFLOW_TRACKING_USERNAME/PASSWORD)"),
        Location("the dataset", data_path, "data.path", "s3://BUCKET/DATASET"),
    ]
    if settings.artifact_root is not None:
        fix = "s3://BUCKET/mlartifacts, or unset it to use the tracking server's store"
        locs.insert(2, Location("MLflow artifacts", settings.artifact_root,
                                "HYPERNYM_ARTIFACT_ROOT", fix))
    return locs


def prepare_locations(*, source: str, output: str) -> list[Location]:
    """What preparation's shard tasks read and write on whichever node they run."""
    return [Location("the source images", source, "source", "s3://BUCKET/RAW"),
            Location("the dataset output", output, "output", "s3://BUCKET/DATASET")]


def refusal(locations: Sequence[Location], shared_fs: Sequence[Path], *, nodes: int) -> str | None:
    """The message refusing a run on ``nodes`` alive Ray nodes, or None when it may start."""
    bad = unreachable(locations, shared_fs)
    if nodes <= 1 or not bad:
        return None
    lines = [f"this Ray cluster has {nodes} nodes, which share only the network, but the run "
             "would use paths that exist on one host only:"]
    lines += [f"  - {loc.what} at {redact(loc.uri)}: set {loc.setting}={loc.fix}" for loc in bad]
    declared = ", ".join(map(str, shared_fs)) or "none declared"
    lines.append(f"If these paths are on a filesystem mounted at the same path on every node "
                 f"(NFS), declare its mount point: {SHARED_FS_ENV}=/mnt/shared ({declared} now).")
    return "\n".join(lines)


def check_cluster(settings: Settings, locations: Sequence[Location]) -> None:
    """Refuse (before any work is scheduled) when the Ray cluster has several nodes and a
    location can only be reached from one host.

    Connects to ``RAY_ADDRESS`` (or uses the Ray this process already joined); with neither,
    the run starts its own single-node Ray and there is nothing to check.

    Raises:
        HypernymError: naming each unreachable location and the setting that moves it.
    """
    if not unreachable(locations, settings.shared_fs):
        return  # nothing to ask Ray: every location is reachable from anywhere
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if not (joined or settings.ray_address):
        return  # the run will start its own one-node Ray
    import ray

    if not joined:  # RAY_ADDRESS: connect now (the run would next)
        from hypernym.runtime import ensure_ray

        ensure_ray(settings=settings)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    message = refusal(locations, settings.shared_fs, nodes=nodes)
    if message:
        raise HypernymError(message)


def check_training(settings: Settings, *, data_path: str) -> None:
    """Everything a training run checks before any Ray work: the tracking server accepts us,
    and (on a cluster of several nodes) every location is reachable from every node.

    Raises:
        HypernymError: from `check_tracking` or `check_cluster`.
    """
    check_tracking(settings)
    check_cluster(settings, training_locations(settings, data_path=data_path))


def redact(uri: str) -> str:
    """``uri`` without a password in its user part (``http://user:***@host``)."""
    parts = urlsplit(str(uri))
    if parts.password is None:
        return str(uri)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _few_retries() -> Iterator[None]:
    # MLflow retries a refused connection for minutes (7 tries, backoff 2): a preflight should
    # answer in seconds. Its HTTP settings are read per request, so they are narrowed here only.
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_tracking(settings: Settings) -> None:
    """One cheap authenticated call to the tracking server (search one experiment).

    Does nothing for tracking the client opens itself (SQLite, a folder).

    Raises:
        HypernymError: the server refused the credentials (401/403) or did not answer. The
            message names the server and the variables to set, never the password.
    """
    if local_path(settings.tracking_uri, tracking=True) is not None:
        return
    from hypernym import tracking

    uri = redact(settings.tracking_uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = (os.environ.get("MLFLOW_TRACKING_PASSWORD")
                or urlsplit(settings.tracking_uri).password)
    try:
        with _few_retries():
            tracking.check_server(settings.tracking_uri)
    except Exception as exc:  # noqa: BLE001 - translated below; the original may hold secrets
        status = getattr(exc, "get_http_status_code", lambda: None)()
        if status in (401, 403) or "error code 401" in str(exc) or "error code 403" in str(exc):
            who = (f"the credentials of user {user!r}" if user else
                   "a request without credentials (MLFLOW_TRACKING_USERNAME is not set)")
            verdict = "denied access to" if status == 403 else "refused"
            raise HypernymError(
                f"the MLflow tracking server at {uri} {verdict} {who}: set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that "
                "server (ask its admin), or point MLFLOW_TRACKING_URI elsewhere") from None
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if password:
            detail = detail.replace(password, "***")
        raise HypernymError(
            f"the MLflow tracking server at {uri} did not answer ({detail}): check that it "
            "runs and MLFLOW_TRACKING_URI names it") from None
