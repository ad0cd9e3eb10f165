"""Where things live: embedded defaults, switched to cluster services by environment variables.

With nothing set, hypernym uses local Ray, MLflow on SQLite under the hypernym home directory and
local files. ``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI`` and ``s3://`` URIs switch each part to real
services without code changes (docs/architecture.md, "Principles").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "get_settings"]

HOME_ENV = "HYPERNYM_HOME"
ARTIFACTS_ENV = "HYPERNYM_ARTIFACT_ROOT"


@dataclass(frozen=True)
class Settings:
    """Resolved locations. Every path is absolute: Ray workers run in other working directories.

    Attributes:
        home: hypernym's own directory (datasets, runs, logs, the embedded MLflow database).
        tracking_uri: MLflow tracking URI; ``sqlite:///<home>/mlflow.db`` when embedded.
        artifact_root: where new MLflow experiments store artifacts.
        ray_address: address of an existing Ray cluster, or None to start one locally.
    """

    home: Path
    tracking_uri: str
    artifact_root: str
    ray_address: str | None

    @property
    def embedded_tracking(self) -> bool:
        return self.tracking_uri.startswith("sqlite:///")

    @property
    def runs_dir(self) -> Path:
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


def get_settings() -> Settings:
    """Read the environment now (not at import), so tests and jobs can change it."""
    home = Path(os.environ.get(HOME_ENV) or Path.cwd() / ".hypernym").expanduser().resolve()
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    artifact_root = os.environ.get(ARTIFACTS_ENV) or (home / "mlartifacts").as_uri()
    ray_address = os.environ.get("RAY_ADDRESS") or None
    return Settings(
        home=home, tracking_uri=tracking_uri, artifact_root=artifact_root, ray_address=ray_address
    )
