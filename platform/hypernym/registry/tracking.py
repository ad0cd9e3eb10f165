"""The MLflow tracking adapter: the only module (with models.py) that imports MLflow.

The driver creates the experiment and the run; Ray Train's rank 0 logs into that run by id through
a `RunLogger`, which holds only strings, so it pickles to workers, and a restarted worker group
keeps logging into the same run.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypernym.registry.metric_queue import MetricQueue
from hypernym.settings import Settings, get_settings

__all__ = ["RunLogger", "client", "ensure_experiment", "flatten", "log_lineage", "start_run",
           "tracking_uri"]

log = logging.getLogger(__name__)
_SECRET = re.compile(r"(key|token|password|secret|credential)", re.IGNORECASE)
_MAX_PARAM = 6000  # MLflow's limit on a param value


def _mlflow():
    import mlflow

    from hypernym.runtime import route_library_logs

    route_library_logs()  # MLflow adds its own terminal handler on import
    return mlflow


def client(tracking_uri: str):
    """An MlflowClient for ``tracking_uri`` (also the registry: embedded SQLite serves both)."""
    return _mlflow().MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore it.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which would change this
    process's settings (and its children's) for good; everything else here passes URIs.
    """
    mlflow = _mlflow()
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


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; secrets are left out, long values truncated."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if _SECRET.search(str(key)):
            continue
        if isinstance(value, dict) and value:
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:_MAX_PARAM]
    return out


class RunLogger:
    """Logs into one existing run by id; safe to pickle to Ray workers.

    Metrics go through a `MetricQueue` (a background thread) that holds them while the server is
    unreachable and sends them, in order, once it answers. Other tracking errors are logged and
    counted, never raised, so a briefly unreachable server does not kill training.
    """

    def __init__(self, run_id: str, *, tracking_uri: str) -> None:
        self.run_id, self.tracking_uri = run_id, tracking_uri
        self._failures = 0
        self._client = None
        self._monitor = None
        self._queue: MetricQueue | None = None

    def __getstate__(self):
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "_failures": 0,
                "_client": None, "_monitor": None, "_queue": None}

    @property
    def failures(self) -> int:
        """Failed tracking calls, metric sends (each retry) included."""
        return self._failures + (self._queue.failures if self._queue else 0)

    @property
    def metrics_dropped(self) -> int:
        """Metrics given up: queue over its bound, or unsent when the logger finished."""
        return self._queue.dropped if self._queue else 0

    @property
    def mlflow_client(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def _safe(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop training
            self._failures += 1
            log.warning("MLflow %s failed (%d so far): %s", what, self._failures, exc)
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self._safe("log_params", self.mlflow_client.log_batch, self.run_id,
                       params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if self._queue is None:
            self._queue = MetricQueue(self._send_metrics)
        self._queue.put([Metric(k, float(v), now, step) for k, v in metrics.items()])

    def _send_metrics(self, batch: list) -> None:  # on the queue's thread; raises to retry
        self.mlflow_client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._safe("set_tags", self.mlflow_client.log_batch, self.run_id,
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self._safe("log_dict", self.mlflow_client.log_dict, self.run_id, obj, artifact_file)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._safe("log_artifact", self.mlflow_client.log_artifact, self.run_id, path,
                   artifact_path)

    def start_system_metrics(self, *, interval_s: float = 10.0, node_id: str | None = None) -> None:
        """CPU, memory, disk, network (and GPU with nvidia-ml-py) of this node as ``system/*``
        metrics (``system/<node_id>/*`` with a node id), from a background thread (MLflow's
        SystemMetricsMonitor). Best effort."""
        def start():
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resume_logging: a restarted worker group continues the run's system-metric steps.
            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s,
                                           resume_logging=True, tracking_uri=self.tracking_uri,
                                           node_id=node_id)
            monitor.start()
            return monitor

        _mlflow()
        self._monitor = self._safe("system metrics", start)

    def finish_worker(self, *, timeout_s: float = 120.0) -> None:
        """A worker's end: stop system metrics, send what is queued (the driver ends the run)."""
        if self._monitor is not None:
            self._safe("system metrics", self._monitor.finish)
            self._monitor = None
        self._close(timeout_s)

    def flush(self, timeout_s: float = 120.0) -> bool:
        """Wait until the queued metrics are sent; False if the server stayed unreachable."""
        return self._queue.flush(timeout_s) if self._queue else True

    def _close(self, timeout_s: float) -> None:
        # Everything else is sent synchronously (system metrics too), so only the queue waits.
        if self._queue is not None:
            self._queue.close(timeout_s)
            if self._queue.dropped:
                log.warning("%d metrics could not be sent to MLflow", self._queue.dropped)

    def finish(self, status: str = "FINISHED", *, timeout_s: float = 120.0) -> None:
        """Send the queued metrics, then end the run as FINISHED, FAILED or KILLED."""
        self._close(timeout_s)
        self._safe("finish", self.mlflow_client.set_terminated, self.run_id, status)


# --------------------------------------------------------------------------- reports
# Small synchronous calls for reports written once at a run's end (evaluation, contamination):
# no queue, an error raises, since the caller is not a training step.

__all__ += ["end_run", "get_run_info", "log_eval_inputs", "log_run_dict", "log_run_figure",
            "log_run_metrics", "log_run_table", "set_run_tags"]


def log_run_metrics(run_id: str, metrics: dict[str, float], *, step: int = 0,
                    settings: Settings | None = None) -> None:
    """Log ``metrics`` into ``run_id`` in batches of MLflow's limit (1000)."""
    import time

    from mlflow.entities import Metric

    settings = settings or get_settings()
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        client(settings.tracking_uri).log_batch(run_id, metrics=items[i : i + 1000])


def log_run_table(run_id: str, table: dict[str, list], artifact_file: str, *,
                  settings: Settings | None = None) -> None:
    """A table (column -> values) as a JSON table artifact; the MLflow UI shows it as a table."""
    settings = settings or get_settings()
    client(settings.tracking_uri).log_table(run_id, data=table, artifact_file=artifact_file)


def log_run_figure(run_id: str, figure, artifact_file: str, *,
                   settings: Settings | None = None) -> None:
    """A matplotlib figure as an image artifact (``.png``), shown by the MLflow UI."""
    settings = settings or get_settings()
    client(settings.tracking_uri).log_figure(run_id, figure, artifact_file)


def log_run_dict(run_id: str, obj: Any, artifact_file: str, *,
                 settings: Settings | None = None) -> None:
    """A JSON/YAML artifact of ``obj``."""
    settings = settings or get_settings()
    client(settings.tracking_uri).log_dict(run_id, obj, artifact_file)


def set_run_tags(run_id: str, tags: dict[str, str], *, settings: Settings | None = None) -> None:
    """Set tags on a run (empty values are left out)."""
    settings = settings or get_settings()
    c = client(settings.tracking_uri)
    for key, value in tags.items():
        if value:
            c.set_tag(run_id, key, str(value))


def end_run(run_id: str, status: str = "FINISHED", *, settings: Settings | None = None) -> None:
    """End a run opened with `start_run` as FINISHED, FAILED or KILLED."""
    settings = settings or get_settings()
    client(settings.tracking_uri).set_terminated(run_id, status)


def log_eval_inputs(run_id: str, *, dataset_name: str, fingerprint: str, uri: str,
                    model_id: str | None = None, settings: Settings | None = None) -> None:
    """Record what an evaluation read: the dataset (context ``eval``) and the evaluated model's
    logged model, so the run page links to both."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

    settings = settings or get_settings()
    dataset = Dataset(name=dataset_name, digest=fingerprint[:32], source_type="hypernym",
                      source=json.dumps({"uri": uri, "fingerprint": fingerprint}))
    client(settings.tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "eval")])],
        models=[LoggedModelInput(model_id)] if model_id else None)


def get_run_info(run_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """A run's tags, metrics and the dataset inputs it logged (name, digest, source JSON)."""
    settings = settings or get_settings()
    run = client(settings.tracking_uri).get_run(run_id)
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return {"tags": dict(run.data.tags), "metrics": dict(run.data.metrics),
            "datasets": [{"name": d.dataset.name, "digest": d.dataset.digest,
                          "source": d.dataset.source,
                          "context": {t.key: t.value for t in d.tags}.get("mlflow.data.context")}
                         for d in inputs]}
