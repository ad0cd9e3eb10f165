"""Runs in MLflow: the client, experiments, runs, their lineage and their latest metrics.

The driver creates the experiment and the run here; workers log into that run by id through a
`hypernym.tracking.RunLogger`. MLflow is imported lazily (``import hypernym`` stays cheap) and
only inside this package (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings

__all__ = ["RunSummary", "client", "ensure_experiment", "latest_metrics", "log_lineage",
           "mark_running", "mlflow_module", "run_summary", "start_run", "tracking_uri"]


def mlflow_module():
    """The ``mlflow`` module, imported on first use with its terminal logging routed to ours."""
    import mlflow

    from hypernym.runtime import route_library_logs

    route_library_logs()  # MLflow adds its own terminal handler on import
    return mlflow


def client(tracking_uri: str):
    """An MlflowClient for ``tracking_uri`` (also the registry: embedded SQLite serves both)."""
    return mlflow_module().MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore it.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which would change this
    process's settings (and its children's) for good; everything else here passes URIs.
    """
    mlflow = mlflow_module()
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)  # None unsets it again


def ensure_experiment(name: str, *, settings: Settings | None = None) -> str:
    """Create the experiment if missing (and so the SQLite schema, once, in the driver)."""
    settings = settings or get_settings()
    if settings.embedded_tracking:
        settings.home.mkdir(parents=True, exist_ok=True)
    c = client(settings.tracking_uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{settings.artifact_root.rstrip('/')}/{name}"
    return c.create_experiment(name, artifact_location=location)


def start_run(*, experiment: str, run_name: str, tags: dict[str, str] | None = None,
              settings: Settings | None = None) -> str:
    """A new RUNNING run (not a global active run); returns its id."""
    settings = settings or get_settings()
    experiment_id = ensure_experiment(experiment, settings=settings)
    run = client(settings.tracking_uri).create_run(
        experiment_id, run_name=run_name, tags={k: v for k, v in (tags or {}).items() if v}
    )
    return run.info.run_id


def log_lineage(run_id: str, *, dataset_name: str, fingerprint: str, uri: str,
                parent_model_id: str | None = None, settings: Settings | None = None) -> None:
    """Record the run's inputs in MLflow: the dataset (name, fingerprint, URI: the run page's
    "Datasets used") and, for a fine-tune, the registered backbone's logged model."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

    settings = settings or get_settings()
    dataset = Dataset(name=dataset_name, digest=fingerprint[:32], source_type="hypernym",
                      source=json.dumps({"uri": uri, "fingerprint": fingerprint}))
    models = [LoggedModelInput(parent_model_id)] if parent_model_id else None
    client(settings.tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")])],
        models=models)




@dataclass(frozen=True)
class RunSummary:
    """What the driver checks before resuming a run."""

    run_id: str
    name: str
    status: str
    tags: dict[str, str]


def run_summary(run_id: str, *, settings: Settings) -> RunSummary:
    """The run's name, status and tags.

    Raises:
        HypernymError: no run ``run_id`` at the settings' tracking URI.
    """
    from mlflow.exceptions import MlflowException

    try:
        run = client(settings.tracking_uri).get_run(run_id)
    except MlflowException:
        raise HypernymError(f"no MLflow run {run_id!r} at {settings.tracking_uri}: give the id "
                            "printed when the run started (or see the MLflow UI)") from None
    return RunSummary(run_id=run_id, name=run.info.run_name, status=run.info.status,
                      tags=dict(run.data.tags))


def mark_running(run_id: str, *, settings: Settings) -> None:
    """Set an existing run's status back to RUNNING (a resumed run)."""
    client(settings.tracking_uri).update_run(run_id, status="RUNNING")


def latest_metrics(run_id: str, *, tracking_uri: str) -> dict[str, float]:
    """The latest value of each of the run's metrics; empty when the server does not answer
    (callers poll it for progress, which is best effort)."""
    try:
        return dict(client(tracking_uri).get_run(run_id).data.metrics)
    except Exception:  # noqa: BLE001 - progress is best effort; training goes on
        return {}
