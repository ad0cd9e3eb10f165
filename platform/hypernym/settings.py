"""Where things live: embedded defaults, switched to cluster services by environment variables.

With nothing set, hypernym uses local Ray, MLflow on SQLite under the hypernym home directory and
local files. Each variable switches one part to a real service, with no code change:

- ``RAY_ADDRESS``: an existing Ray cluster.
- ``MLFLOW_TRACKING_URI`` (with ``MLFLOW_TRACKING_USERNAME``/``..._PASSWORD`` for a server with
  basic auth): the tracking server and model registry.
- ``HYPERNYM_ARTIFACT_ROOT``: where new experiments keep artifacts. Embedded: a folder under the
  home; with a tracking server: the server's own default (artifacts proxied by the server).
- ``HYPERNYM_STORAGE``: where Ray Train writes checkpoints and where resume and registration read
  them (``s3://bucket/prefix`` or a path such as an NFS mount; default ``<home>/runs``).
- ``HYPERNYM_SHARED_FS``: folders (separated by ``:``) mounted at the same path on every node of
  the cluster; local paths under them count as reachable from every node (see `hypernym.preflight`).

docs/cluster.md says what a cluster needs; docs/architecture.md, "Principles", why.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "get_settings", "is_secret", "redact_secrets"]

HOME_ENV = "HYPERNYM_HOME"
ARTIFACTS_ENV = "HYPERNYM_ARTIFACT_ROOT"
STORAGE_ENV = "HYPERNYM_STORAGE"
SHARED_FS_ENV = "HYPERNYM_SHARED_FS"
_SERVER_SCHEMES = ("http://", "https://", "databricks")
CREDENTIALS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_SECURITY_TOKEN", "MLFLOW_TRACKING_USERNAME",
                         "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"})
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY|"
                          r"API_KEY|AUTH", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@\s]+@")


@dataclass(frozen=True)
class Settings:
    """Resolved locations. Every path is absolute: Ray workers run in other working directories.

    Attributes:
        home: hypernym's own directory (datasets, logs, the embedded MLflow database).
        tracking_uri: MLflow tracking URI; ``sqlite:///<home>/mlflow.db`` when embedded.
        artifact_root: where new MLflow experiments store artifacts; None lets the tracking
            server choose (its proxied artifact store).
        ray_address: address of an existing Ray cluster, or None to start one locally.
        storage: where Ray Train keeps runs and checkpoints: a URI (``s3://bucket/prefix``) or
            an absolute local path.
        shared_fs: absolute folders declared mounted on every node of the cluster.
    """

    home: Path
    tracking_uri: str
    artifact_root: str | None
    ray_address: str | None
    storage: str = ""
    shared_fs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.storage:  # built by hand (tests, tools): the embedded default
            object.__setattr__(self, "storage", str(self.home / "runs"))

    @property
    def embedded_tracking(self) -> bool:
        return self.tracking_uri.startswith("sqlite:///")

    @property
    def runs_dir(self) -> Path:
        """The embedded default for `storage`."""
        return self.home / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def mlflow_ui_command(self) -> str:
        """The command that opens the MLflow UI on these runs."""
        if not self.embedded_tracking:
            return f"open {self.tracking_uri} in a browser"
        return (
            f"mlflow ui --backend-store-uri {self.tracking_uri} "
            f"--default-artifact-root {self.artifact_root} --port 5000"
        )


def _storage(value: str | None, home: Path) -> str:
    if not value:
        return str(home / "runs")
    value = value.strip()
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    elif "://" in value:
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def get_settings() -> Settings:
    """Read the environment now (not at import), so tests and jobs can change it."""
    home = Path(os.environ.get(HOME_ENV) or Path.cwd() / ".hypernym").expanduser().resolve()
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    artifact_root = os.environ.get(ARTIFACTS_ENV) or None
    if artifact_root is None and not tracking_uri.startswith(_SERVER_SCHEMES):
        # A server proxies artifacts to its own store; a database the client opens itself
        # (SQLite, PostgreSQL) needs an absolute root, not MLflow's ./mlruns.
        artifact_root = (home / "mlartifacts").as_uri()
    ray_address = os.environ.get("RAY_ADDRESS") or None
    shared = tuple(Path(p).expanduser().resolve()
                   for p in os.environ.get(SHARED_FS_ENV, "").split(os.pathsep) if p.strip())
    return Settings(
        home=home, tracking_uri=tracking_uri, artifact_root=artifact_root,
        ray_address=ray_address, storage=_storage(os.environ.get(STORAGE_ENV), home),
        shared_fs=shared,
    )


def is_secret(name: str) -> bool:
    """Whether an environment variable holds a credential, judged by its name."""
    return name in CREDENTIALS or bool(_SECRET_NAME.search(name))


def redact_secrets(text: str) -> str:
    """``text`` with the values of this process's secret environment variables, and passwords
    in URIs (``scheme://user:password@host``), replaced by ``***``."""
    text = _URI_PASSWORD.sub(r"\1:***@", text)
    for name, value in os.environ.items():
        if len(value) >= 4 and is_secret(name) and name != "MLFLOW_TRACKING_USERNAME":
            text = text.replace(value, "***")
    return text
