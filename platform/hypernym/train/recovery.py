"""The driver's side of losing a run: the one line a failed run ends with, and the checks
before a run is resumed.

A run that fails (a node lost with ``scaling.max_failures`` spent, a worker error) would
otherwise end with Ray's traceback, whose last line is often a symptom on another rank (gloo's
``Connection closed by peer``). `failed_run` turns it into one line: which run, what failed on
which rank, and the command that resumes it; the same line goes into the run's
``hypernym.failure`` tag, where ``hypernym runs show`` finds it.

`check_resume` refuses a resume that would do harm: a run whose driver still beats (two drivers
on one run), a run whose checkpoints are kept under another ``HYPERNYM_STORAGE``, or a run
trained on Ray Train resumed in one process or the other way round (each would silently start
again from step 0).
"""

from __future__ import annotations

import logging
import os
import time

from hypernym import tracking
from hypernym.errors import HypernymError
from hypernym.settings import Settings

__all__ = ["FAILURE_TAG", "IN_PROCESS_TAG", "STORAGE_TAG", "RunFailed", "check_resume",
           "describe_failure", "failed_run", "resume_command"]

log = logging.getLogger(__name__)

STORAGE_TAG = "hypernym.storage"  # the run's directory on run storage (Ray Train's run dir)
IN_PROCESS_TAG = "hypernym.in_process"  # "true": trained in one process, without Ray
FAILURE_TAG = "hypernym.failure"


class RunFailed(HypernymError):
    """A training run failed after it started; the message says what and how to resume it."""


def _last_line(exc: BaseException) -> str:
    """The informative line of an exception: Ray wraps a worker's error with its traceback,
    whose last line names the error itself."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    name = type(exc).__name__
    if not text.startswith(name) and ":" not in text[:40]:
        text = f"{name}: {text}" if text else name
    return text[:200]


def describe_failure(exc: BaseException, *, max_failures: int | None = None) -> str:
    """What failed, in one line (per failed rank for a worker group)."""
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        ranks = "; ".join(f"rank {rank}: {_last_line(err)}"
                          for rank, err in sorted(failures.items()))
        spent = (f" (scaling.max_failures {max_failures} spent)" if max_failures is not None
                 else "")
        return f"the worker group failed{spent}: {ranks}"
    controller = getattr(exc, "controller_failure", None)
    if controller is not None:
        return f"Ray Train's controller failed: {_last_line(controller)}"
    return _last_line(exc)


def resume_command(kind: str, run_id: str, *, submitted: bool | None = None,
                   in_process: bool = False) -> str:
    """The command that resumes ``run_id``: ``hypernym submit --resume`` from a submitted job
    (its driver runs on a cluster), else ``hypernym <kind> --resume`` (with ``--in-process``
    for a run trained in one process)."""
    if submitted is None:  # Ray's job supervisor sets this for every submitted job's driver
        submitted = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    if submitted:
        return f"hypernym submit --resume {run_id}"
    return f"hypernym {kind} --resume {run_id}" + (" --in-process" if in_process else "")


def failed_run(exc: BaseException, recipe, run_id: str, settings: Settings, *,
               in_process: bool = False) -> RunFailed:
    """The error a failed run ends with: logged (with the full traceback at debug level),
    recorded in the run's ``hypernym.failure`` tag, and returned for the caller to raise."""
    what = describe_failure(exc, max_failures=None if in_process else getattr(
        getattr(recipe, "scaling", None), "max_failures", None))
    command = resume_command(recipe.kind, run_id, submitted=False if in_process else None,
                             in_process=in_process)
    line = (f"run {run_id} ({recipe.kind} {recipe.name!r}) failed: {what}. Resume it from "
            f"its last whole checkpoint: {command}")
    log.debug("run %s failed", run_id, exc_info=exc)
    try:
        tracking.set_run_tags(run_id, {FAILURE_TAG: line[:5000]}, settings=settings)
    except Exception as tag_error:  # noqa: BLE001 - the tracking server may be what failed
        log.warning("could not record the failure in run %s: %s", run_id, tag_error)
    return RunFailed(line)


def check_resume(run_id: str, run_dir: str, settings: Settings, *,
                 in_process: bool = False) -> None:
    """Refuse a resume that would put two drivers on one run, or lose its checkpoints.

    Args:
        run_dir: where this resume would look for the run's checkpoints.
        in_process: the resume trains in one process (else on Ray Train).

    Raises:
        HypernymError: the run's driver beat less than `tracking.liveness.LIVE_S` ago, the run
            recorded another storage directory, or it trained on Ray Train and would resume in
            one process (or the other way round): each keeps its own record of its
            checkpoints, and the other would start again from step 0.
    """
    from hypernym.tracking.liveness import HEARTBEAT_TAG, LIVE_S

    run = tracking.run_summary(run_id, settings=settings)
    beat = run.tags.get(HEARTBEAT_TAG)
    if run.status == "RUNNING" and beat and time.time() - float(beat) < LIVE_S:
        raise HypernymError(
            f"run {run_id} is still running (its driver's heartbeat is "
            f"{max(0.0, time.time() - float(beat)):.0f} s old): stop its job first "
            "(`hypernym jobs stop`), "
            f"or wait {LIVE_S:.0f} s after its driver is gone")
    recorded = run.tags.get(STORAGE_TAG)
    if recorded and recorded.rstrip("/") != run_dir.rstrip("/"):
        raise HypernymError(
            f"run {run_id} keeps its checkpoints in {recorded}, but this resume would look in "
            f"{run_dir}: set HYPERNYM_STORAGE={recorded.rsplit('/', 1)[0]} where the job runs")
    was_in_process = run.tags.get(IN_PROCESS_TAG) == "true"
    if was_in_process != in_process:
        command = resume_command(run.tags.get("hypernym.kind", "pretrain"), run_id,
                                 submitted=False, in_process=was_in_process)
        where = "in one process" if was_in_process else "on Ray Train"
        raise HypernymError(f"run {run_id} trained {where}, and each keeps its own record of its "
                            f"checkpoints: resume it the same way ({command})")
