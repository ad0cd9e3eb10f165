"""Reports written once at a run's end (evaluation, contamination): small synchronous calls.

No queue, unlike `RunLogger`: an error raises, since the caller is not a training step.
"""

from __future__ import annotations

from typing import Any

from hypernym.settings import Settings, get_settings
from hypernym.tracking.runs import client

__all__ = ["end_run", "get_run_info", "log_eval_inputs", "log_run_dict", "log_run_figure",
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
