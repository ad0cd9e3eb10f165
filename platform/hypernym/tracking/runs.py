"""Runs in MLflow: experiments, a run's life (start, resume, end), what it read (its inputs),
and reading a run back (name, status, tags, params, metrics, inputs; metric history; the child
runs of a parent).

The driver creates the experiment and the run here; workers log into that run by id through a
`hypernym.tracking.RunLogger`. MLflow is imported lazily (``import hypernym`` stays cheap) and
only inside the MLflow adapters (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings
from hypernym.tracking._backend import client

__all__ = ["RunDataset", "RunSummary", "check_server", "child_runs", "end_run",
           "ensure_experiment", "latest_metrics", "log_inputs", "mark_running", "metric_history",
           "run_summary", "start_run"]


def ensure_experiment(name: str, *, settings: Settings | None = None) -> str:
    """Create the experiment if missing (and so the SQLite schema, once, in the driver)."""
    settings = settings or get_settings()
    if settings.embedded_tracking:
        settings.home.mkdir(parents=True, exist_ok=True)
    c = client(settings.tracking_uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # None: a tracking server puts the experiment in its own (proxied) artifact store.
    location = f"{settings.artifact_root.rstrip('/')}/{name}" if settings.artifact_root else None
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


def mark_running(run_id: str, *, settings: Settings | None = None) -> None:
    """Set an existing run's status back to RUNNING (a resumed run)."""
    settings = settings or get_settings()
    client(settings.tracking_uri).update_run(run_id, status="RUNNING")


def end_run(run_id: str, status: str = "FINISHED", *, settings: Settings | None = None) -> None:
    """End a run opened with `start_run` as FINISHED, FAILED or KILLED."""
    settings = settings or get_settings()
    client(settings.tracking_uri).set_terminated(run_id, status)


def log_inputs(run_id: str, *, dataset_name: str, fingerprint: str, uri: str,
               context: Literal["train", "eval"] = "train", model_id: str | None = None,
               settings: Settings | None = None) -> None:
    """Record what the run read, so its MLflow page links to it: the dataset (name, fingerprint,
    URI; "Datasets used", with ``context``) and a logged model (``models:/m-...`` id): for a
    fine-tune the registered backbone it started from, for an evaluation the evaluated model."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

    settings = settings or get_settings()
    dataset = Dataset(name=dataset_name, digest=fingerprint[:32], source_type="hypernym",
                      source=json.dumps({"uri": uri, "fingerprint": fingerprint}))
    client(settings.tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])],
        models=[LoggedModelInput(model_id)] if model_id else None)


@dataclass(frozen=True)
class RunDataset:
    """A dataset a run logged as its input (`log_inputs`)."""

    name: str
    digest: str
    source: str  # JSON: {"uri": ..., "fingerprint": ...} for hypernym's own inputs
    context: str | None  # "train" or "eval"


@dataclass(frozen=True)
class RunSummary:
    """A run as hypernym reads it back: identity, status, tags, params, latest metrics, inputs."""

    run_id: str
    name: str
    status: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    datasets: list[RunDataset] = field(default_factory=list)


def _summary(run) -> RunSummary:
    inputs = run.inputs.dataset_inputs if run.inputs else []
    datasets = [RunDataset(name=d.dataset.name, digest=d.dataset.digest, source=d.dataset.source,
                           context={t.key: t.value for t in d.tags}.get("mlflow.data.context"))
                for d in inputs]
    return RunSummary(run_id=run.info.run_id, name=run.info.run_name, status=run.info.status,
                      tags=dict(run.data.tags), params=dict(run.data.params),
                      metrics=dict(run.data.metrics), datasets=datasets)


def run_summary(run_id: str, *, settings: Settings | None = None) -> RunSummary:
    """The run's name, status, tags, params, latest metrics and dataset inputs.

    Raises:
        HypernymError: no run ``run_id`` at the settings' tracking URI.
    """
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    try:
        run = client(settings.tracking_uri).get_run(run_id)
    except MlflowException:
        raise HypernymError(f"no MLflow run {run_id!r} at {settings.tracking_uri}: give the id "
                            "printed when the run started (or see the MLflow UI)") from None
    return _summary(run)


def child_runs(parent_run_id: str, *, experiment: str, tags: dict[str, str] | None = None,
               settings: Settings | None = None) -> list[RunSummary]:
    """The runs of ``experiment`` whose parent is ``parent_run_id`` (tag ``mlflow.parentRunId``),
    narrowed to those carrying every tag in ``tags``."""
    settings = settings or get_settings()
    c = client(settings.tracking_uri)
    found = c.get_experiment_by_name(experiment)
    if found is None:
        return []
    filters = [f"tags.mlflow.parentRunId = '{parent_run_id}'"]
    filters += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
    runs = c.search_runs([found.experiment_id], filter_string=" and ".join(filters),
                         max_results=10_000)
    return [_summary(run) for run in runs]


def latest_metrics(run_id: str, *, tracking_uri: str) -> dict[str, float]:
    """The latest value of each of the run's metrics; empty when the server does not answer
    (callers poll it for progress, which is best effort)."""
    try:
        return dict(client(tracking_uri).get_run(run_id).data.metrics)
    except Exception:  # noqa: BLE001 - progress is best effort; training goes on
        return {}


def metric_history(run_id: str, key: str, *, settings: Settings | None = None) -> list[float]:
    """Every value logged for metric ``key`` of the run, in step order."""
    settings = settings or get_settings()
    history = client(settings.tracking_uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def check_server(tracking_uri: str) -> None:
    """One cheap request to the tracking server (at most one experiment listed).

    Raises:
        Exception: what MLflow raises when the server refuses the credentials or does not
            answer (`hypernym.preflight.check_tracking` turns it into a clear error).
    """
    client(tracking_uri).search_experiments(max_results=1)
