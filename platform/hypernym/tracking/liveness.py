"""Is a run alive? Its driver's heartbeat, its last metric, and the unfinished runs in MLflow.

A run's status says RUNNING until its driver ends it, so a driver that dies with its Ray head
leaves the run RUNNING for ever. The driver therefore stamps the run with a heartbeat tag
(``hypernym.heartbeat``, seconds since the epoch) every `HEARTBEAT_S` while it trains; the
workers' metrics (training and system metrics) carry their own times. A RUNNING run silent on
both for longer than a threshold has lost its driver: it is *abandoned*, and resumable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hypernym.settings import Settings
from hypernym.tracking._backend import client

__all__ = ["HEARTBEAT_S", "HEARTBEAT_TAG", "LIVE_S", "RunRecord", "close_run", "heartbeat",
           "note_resume", "run_record", "run_recipe", "unfinished_runs"]

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "hypernym.heartbeat"
HEARTBEAT_S = 10.0  # how often a training driver stamps its run
# A run stamped more recently than this still has a driver: resuming it would put two drivers
# on one run, so a resume is refused (three missed beats: a slow tracking call is not a death).
LIVE_S = 3 * HEARTBEAT_S


@dataclass(frozen=True)
class RunRecord:
    """One training run as MLflow knows it."""

    run_id: str
    name: str
    experiment: str
    status: str
    kind: str
    start_time: float  # seconds since the epoch
    end_time: float | None
    heartbeat: float | None  # the driver's last heartbeat
    last_metric: float | None  # the newest timestamp of any of its metrics
    tags: dict[str, str]

    @property
    def last_seen(self) -> float:
        """The last sign of life: heartbeat, metric, or the start."""
        return max(t for t in (self.heartbeat, self.last_metric, self.start_time) if t)

    def abandoned(self, stale_after_s: float, now: float | None = None) -> bool:
        """RUNNING, with no heartbeat and no metric for longer than ``stale_after_s``."""
        return self.status == "RUNNING" and (now or time.time()) - self.last_seen > stale_after_s


def _record(run, experiment: str) -> RunRecord:
    tags = dict(run.data.tags)
    # to_proto() is RunData's public view of the latest metrics with their timestamps.
    stamps = [m.timestamp for m in run.data.to_proto().metrics]
    try:
        beat = float(tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        beat = None
    return RunRecord(
        run_id=run.info.run_id, name=run.info.run_name or "", experiment=experiment,
        status=run.info.status, kind=tags.get("hypernym.kind", ""),
        start_time=run.info.start_time / 1000, heartbeat=beat,
        end_time=run.info.end_time / 1000 if run.info.end_time else None,
        last_metric=max(stamps) / 1000 if stamps else None, tags=tags)


def unfinished_runs(*, settings: Settings, experiment: str | None = None,
                    include_finished: bool = False, limit: int = 50) -> list[RunRecord]:
    """Training runs (``hypernym.kind`` pretrain or finetune) that did not finish, newest
    first: RUNNING (alive or abandoned), FAILED, KILLED; with ``include_finished`` all."""
    c = client(settings.tracking_uri)
    experiments = {e.experiment_id: e.name for e in c.search_experiments()
                   if experiment is None or e.name == experiment}
    if not experiments:
        return []
    # (MLflow compares a run's status with one value only: IN is for run ids.)
    runs = c.search_runs(
        list(experiments), max_results=limit, order_by=["attributes.start_time DESC"],
        filter_string="" if include_finished else "attributes.status != 'FINISHED'")
    return [_record(r, experiments[r.info.experiment_id]) for r in runs
            if r.data.tags.get("hypernym.kind") in ("pretrain", "finetune")]


def run_record(run_id: str, *, settings: Settings) -> RunRecord:
    """One run (any status).

    Raises:
        HypernymError: no such run at the tracking URI.
    """
    from mlflow.exceptions import MlflowException

    from hypernym.errors import HypernymError

    c = client(settings.tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise HypernymError(f"no MLflow run {run_id!r} at {settings.tracking_uri}: "
                            "`hypernym runs list` shows the unfinished ones") from None
    return _record(run, c.get_experiment(run.info.experiment_id).name)


def run_recipe(run_id: str, *, settings: Settings) -> dict:
    """The resolved recipe a training run logged when it started (its ``recipe.json``)."""
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = client(settings.tracking_uri).download_artifacts(run_id, "recipe.json", tmp)
        return json.loads(Path(path).read_text())


def close_run(run_id: str, *, status: str, tags: dict[str, str], settings: Settings) -> None:
    """End a run as ``status`` (FAILED, KILLED) with ``tags`` (why), by hand."""
    c = client(settings.tracking_uri)
    for key, value in tags.items():
        c.set_tag(run_id, key, value)
    c.set_terminated(run_id, status)


def note_resume(run_id: str, *, settings: Settings) -> int:
    """Record that the run was resumed: tag ``hypernym.resumes`` (the count) and a metric
    ``run/resumed`` at the run's last logged step, whose time marks the gap in the run's
    history; returns the count."""
    c = client(settings.tracking_uri)
    data = c.get_run(run_id).data
    count = int(data.tags.get("hypernym.resumes", "0")) + 1
    c.set_tag(run_id, "hypernym.resumes", str(count))
    c.log_metric(run_id, "run/resumed", count, step=int(data.metrics.get("progress/step", 0)))
    return count


@contextmanager
def heartbeat(run_id: str, *, tracking_uri: str, interval_s: float = HEARTBEAT_S
              ) -> Iterator[None]:
    """Stamp the run's `HEARTBEAT_TAG` every ``interval_s`` while the block runs (from a
    daemon thread, best effort: a tracking outage only delays the beats)."""
    stop = threading.Event()

    def beat() -> None:
        c = client(tracking_uri)
        while True:
            try:
                c.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
            except Exception as exc:  # noqa: BLE001 - a missed beat must not stop training
                log.debug("heartbeat of run %s failed: %s", run_id, exc)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=beat, name="hypernym-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
