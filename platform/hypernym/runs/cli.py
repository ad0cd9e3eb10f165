"""`hypernym runs list | show | mark-failed`: unfinished training runs (thin over status.py).

Plain aligned text rather than a table widget: run ids are copied from it into the next
command, and a table fitted to an 80-column pipe would wrap them.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

import typer
from rich.console import Console

from hypernym.errors import HypernymError

__all__ = ["ago", "parse_duration", "runs_app"]

runs_app = typer.Typer(no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)

StaleOpt = Annotated[str, typer.Option(
    "--stale-after", help="a RUNNING run silent (no heartbeat, no metric) this long is "
    "abandoned: 90s, 10m, 2h")]


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise HypernymError(f"--stale-after {text!r}: give a duration such as 90s, 10m or 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def ago(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago" if s < 172800 else f"{s / 86400:.0f} days ago"


def _when(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) + f" ({ago(t, now)})"


def _done(epochs: int) -> str:
    return f"{epochs} epoch{'' if epochs == 1 else 's'} done"


def _checkpoint(view, now: float) -> str:
    latest = view.latest
    if latest is None:
        return "none" if view.storage_error is None or "no checkpoint" in view.storage_error \
            else "unreadable"
    if latest.step is None:
        return f"{latest.name} (no manifest)"
    return f"step {latest.step}, {_done(latest.epoch)}, {ago(latest.written, now)}"


@runs_app.command("list")
def list_(
    stale_after: StaleOpt = "10m",
    experiment: Annotated[str | None, typer.Option(help="only this experiment")] = None,
    all_: Annotated[bool, typer.Option("--all", help="finished runs too")] = False,
) -> None:
    """Training runs that did not finish, newest first, and whether they look abandoned."""
    from hypernym.runs.status import list_runs
    from hypernym.settings import get_settings

    stale = parse_duration(stale_after)
    views = list_runs(settings=get_settings(), experiment=experiment, include_finished=all_)
    if not views:
        out.print("no unfinished training runs" + ("" if all_ else " (--all: finished too)"))
        return
    now = time.time()
    rows = [("run id", "recipe", "kind", "state", "last checkpoint", "last metric")]
    for v in views:
        r = v.record
        rows.append((r.run_id, r.name, r.kind, v.state(stale, now), _checkpoint(v, now),
                     ago(r.last_metric, now)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
                  markup=False)
    if any(v.state(stale, now) == "abandoned" for v in views):
        out.print(f"abandoned: RUNNING, but no heartbeat or metric for over {stale_after}; "
                  "`hypernym runs show RUN_ID` says how to resume it", markup=False)


@runs_app.command()
def show(
    run_id: str,
    stale_after: StaleOpt = "10m",
    verify: Annotated[bool, typer.Option(
        "--verify", help="check every file of the recorded checkpoints on run storage "
        "(reads them all)")] = False,
) -> None:
    """One run: its state, its checkpoints on run storage, and the command that resumes it."""
    from hypernym.runs.status import show_run
    from hypernym.settings import get_settings
    from hypernym.train.recovery import IN_PROCESS_TAG

    view = show_run(run_id, settings=get_settings(), verify=verify)
    r, now = view.record, time.time()
    lines = [("run", f"{r.run_id}  {r.kind} {r.name!r}, experiment {r.experiment!r}"),
             ("state", f"{view.state(parse_duration(stale_after), now)} (MLflow status {r.status}, "
                       f"last heard from {ago(r.last_seen, now)})"),
             ("started", _when(r.start_time, now)),
             ("heartbeat", _when(r.heartbeat, now)),
             ("last metric", _when(r.last_metric, now))]
    if r.end_time:
        lines.append(("ended", _when(r.end_time, now)))
    lines.append(("storage", view.storage + (f"  ({view.storage_error})"
                                             if view.storage_error else "")))
    for key, tag in (("failure", "hypernym.failure"), ("resumed", "hypernym.resumes"),
                     ("restored from", "hypernym.restored_from"),
                     ("skipped", "hypernym.checkpoints_skipped")):
        if r.tags.get(tag):
            lines.append((key, r.tags[tag] + (" time(s)" if key == "resumed" else "")))
    for key, value in lines:
        out.print(f"{key + ':':<14}{value}", markup=False)
    in_process = r.tags.get(IN_PROCESS_TAG) == "true"  # trained in one process, without Ray
    if view.checkpoints:
        out.print(f"checkpoints recorded by {'the run' if in_process else 'Ray Train'}, newest "
                  "first:", markup=False)
        for c in reversed(view.checkpoints):
            where = (f"step {c.step}, {_done(c.epoch)}, written {_when(c.written, now)}"
                     if c.step is not None else "")
            health = (f"NOT WHOLE: {c.problem}" if c.problem
                      else "verified" if c.verified else "has its manifest")
            out.print(f"  {c.name:<24}{where}  [{health}]", markup=False)
    if r.status != "FINISHED":
        out.print(f"resume:       {view.resume_command()}", markup=False)
    if r.status != "FINISHED" and not in_process:
        out.print(f"              (or `hypernym {r.kind} --resume {r.run_id}` on this "
                  "machine's Ray; add a recipe file to use it instead of the run's own)",
                  markup=False)


@runs_app.command("mark-failed")
def mark_failed(
    run_id: str,
    reason: Annotated[str, typer.Option(help="why, recorded in the run's hypernym.failure "
                                        "tag")] = "abandoned: its driver is gone",
    force: Annotated[bool, typer.Option(help="close it even if it was heard from in the "
                                        "last 30 s")] = False,
) -> None:
    """Close an abandoned RUNNING run as FAILED, with a reason; it stays resumable."""
    from hypernym.runs.status import mark_failed as close
    from hypernym.settings import get_settings

    record = close(run_id, reason=reason, settings=get_settings(), force=force)
    out.print(f"run {run_id}: {record.status}"
              + (f" ({record.tags.get('hypernym.failure')})" if record.status == "FAILED"
                 else ""), markup=False)
