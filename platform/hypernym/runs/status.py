"""Where a training run stands, from MLflow (status, heartbeat, metrics) and run storage (the
checkpoints Ray Train recorded, and their manifests).

A run's checkpoints are in its directory on run storage: the ``hypernym.storage`` tag the run
was started with, or ``<HYPERNYM_STORAGE>/<recipe name>-<run id[:12]>`` for runs that predate
it. Ray Train's ``checkpoint_manager_snapshot.json`` there (or a one-process run's
``checkpoints.json``) lists the checkpoints recorded, in order; each checkpoint's manifest
gives its step, epoch and time (`hypernym.train.verify`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hypernym import tracking
from hypernym.errors import HypernymError
from hypernym.settings import Settings
from hypernym.tracking.liveness import LIVE_S, RunRecord
from hypernym.train.recovery import FAILURE_TAG, IN_PROCESS_TAG, STORAGE_TAG, resume_command
from hypernym.train.run_storage import run_dir
from hypernym.train.verify import check_checkpoint, read_manifest, recorded_in

__all__ = ["STALE_AFTER_S", "CheckpointInfo", "RunView", "list_runs", "mark_failed",
           "show_run"]

STALE_AFTER_S = 600.0  # default: a RUNNING run silent this long is abandoned


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint Ray Train recorded: where it stood, by its manifest."""

    name: str
    step: int | None = None
    epoch: int | None = None
    written: float | None = None
    problem: str | None = None  # what is wrong with it: no manifest, or (verified) a file
    verified: bool = False


@dataclass
class RunView:
    """One run: its MLflow record and what its run storage holds."""

    record: RunRecord
    storage: str
    checkpoints: list[CheckpointInfo] = field(default_factory=list)  # oldest first
    storage_error: str | None = None

    @property
    def latest(self) -> CheckpointInfo | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def state(self, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> str:
        """``running``, ``abandoned`` (RUNNING but silent), ``failed``, ``killed`` or
        ``finished``."""
        if self.record.abandoned(stale_after_s, now):
            return "abandoned"
        return self.record.status.lower()

    def resume_command(self) -> str:
        if self.record.tags.get(IN_PROCESS_TAG) == "true":  # trained without Ray
            return resume_command(self.record.kind, self.record.run_id, submitted=False,
                                  in_process=True)
        return resume_command(self.record.kind, self.record.run_id, submitted=True)


def _storage_of(record: RunRecord, settings: Settings) -> str:
    return record.tags.get(STORAGE_TAG) or run_dir(settings.storage, record.name,
                                                   record.run_id)


def _checkpoints(storage: str, *, verify: bool) -> tuple[list[CheckpointInfo], str | None]:
    """The checkpoints recorded in ``storage`` (a run directory URI), oldest first, and what
    prevented reading them (None when nothing did)."""
    from hypernym.data.storage import open_fs

    try:
        fs, root = open_fs(storage)
        names = recorded_in(fs, root)
    except FileNotFoundError:
        return [], "no checkpoint recorded yet"
    except ValueError as exc:
        return [], f"the run's checkpoint record: {exc}"
    except Exception as exc:  # noqa: BLE001 - an unreachable store is reported, not raised
        return [], f"cannot read run storage: {type(exc).__name__}: {exc}"
    out = []
    for name in names:
        manifest = read_manifest(f"{root}/{name}", fs=fs)
        problem = None if manifest else "no readable manifest"
        if verify and manifest:
            problem = check_checkpoint(f"{root}/{name}", fs=fs)
        out.append(CheckpointInfo(
            name=name, step=manifest.step if manifest else None,
            epoch=manifest.epoch if manifest else None,
            written=manifest.written if manifest else None, problem=problem,
            verified=verify and manifest is not None))
    return out, None


def _view(record: RunRecord, settings: Settings, *, verify: bool = False) -> RunView:
    storage = _storage_of(record, settings)
    checkpoints, error = _checkpoints(storage, verify=verify)
    return RunView(record=record, storage=storage, checkpoints=checkpoints,
                   storage_error=error)


def list_runs(*, settings: Settings, experiment: str | None = None,
              include_finished: bool = False, limit: int = 50) -> list[RunView]:
    """The training runs that did not finish (newest first), with their checkpoints."""
    records = tracking.unfinished_runs(settings=settings, experiment=experiment,
                                       include_finished=include_finished, limit=limit)
    return [_view(r, settings) for r in records]


def show_run(run_id: str, *, settings: Settings, verify: bool = False) -> RunView:
    """One run, with its recorded checkpoints (``verify``: each file checked on storage).

    Raises:
        HypernymError: no such run.
    """
    return _view(tracking.run_record(run_id, settings=settings), settings, verify=verify)


def mark_failed(run_id: str, *, reason: str, settings: Settings, force: bool = False
                ) -> RunRecord:
    """Close a RUNNING run whose driver is gone as FAILED, with ``reason`` in its
    ``hypernym.failure`` tag; it stays resumable.

    Raises:
        HypernymError: the run finished, or its driver still beats (``force`` overrides).
    """
    record = tracking.run_record(run_id, settings=settings)
    if record.status == "FINISHED":
        raise HypernymError(f"run {run_id} finished: there is nothing to close")
    if record.status != "RUNNING":
        return record
    # the heartbeat is stamped in whole seconds: it can read a fraction ahead of now
    quiet = max(0.0, time.time() - record.last_seen)
    if quiet < LIVE_S and not force:
        raise HypernymError(
            f"run {run_id} was heard from {quiet:.0f} s ago: its driver may still be running. "
            f"Stop its job (`hypernym jobs stop`), or pass --force to close it anyway")
    line = f"marked failed by hand: {reason} (nothing heard for {quiet:.0f} s)"
    tracking.close_run(run_id, status="FAILED", settings=settings,
                       tags={FAILURE_TAG: line, "hypernym.closed_by": "hypernym runs mark-failed"})
    return tracking.run_record(run_id, settings=settings)
