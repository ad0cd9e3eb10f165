"""`RunLogger`: logging into one existing MLflow run by id, from the driver or a Ray worker.

It holds only strings, so it pickles to workers, and a restarted worker group keeps logging into
the same run. Metrics go through a `MetricQueue`, which keeps them through a server outage.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from hypernym.tracking._backend import client, mlflow_module
from hypernym.tracking.metric_queue import MetricQueue

__all__ = ["RunLogger", "flatten"]

log = logging.getLogger(__name__)
_SECRET = re.compile(r"(key|token|password|secret|credential)", re.IGNORECASE)
_MAX_PARAM = 6000  # MLflow's limit on a param value


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
    def _mlflow(self):
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
            self._safe("log_params", self._mlflow.log_batch, self.run_id,
                       params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if self._queue is None:
            self._queue = MetricQueue(self._send_metrics)
        self._queue.put([Metric(k, float(v), now, step) for k, v in metrics.items()])

    def _send_metrics(self, batch: list) -> None:  # on the queue's thread; raises to retry
        self._mlflow.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._safe("set_tags", self._mlflow.log_batch, self.run_id,
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self._safe("log_dict", self._mlflow.log_dict, self.run_id, obj, artifact_file)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._safe("log_artifact", self._mlflow.log_artifact, self.run_id, path,
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

        mlflow_module()
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
        self._safe("finish", self._mlflow.set_terminated, self.run_id, status)
