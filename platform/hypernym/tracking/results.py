"""Results logged into a run once, at the end of a step (an evaluation report, a contamination
check): metrics, tags, tables, figures and JSON, each in one synchronous call.

No queue, unlike `RunLogger`: an error raises, since the caller is not a training step.
"""

from __future__ import annotations

from typing import Any

from hypernym.settings import Settings, get_settings
from hypernym.tracking._backend import client

__all__ = ["log_run_dict", "log_run_figure", "log_run_metrics", "log_run_table", "set_run_tags"]


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
