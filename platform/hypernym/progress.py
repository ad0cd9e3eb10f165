"""One progress bar for every long-running command (prepare's shards, a training run's steps).

A `ProgressBar` is a rich bar on stderr, or nothing when disabled (tests, submitted jobs). Work
that runs elsewhere (Ray workers on a cluster) is followed with ``ProgressBar.polled``: a
background thread asks a function for the state every ``interval_s`` and draws it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["ProgressBar", "ProgressState"]


class ProgressState(NamedTuple):
    """What a poll returns: units done, the bar's label, and a short free-text field."""

    completed: float
    description: str
    info: str = ""


class ProgressBar:
    """A rich progress bar over ``total`` units (shards, steps), or a no-op when not enabled.

    Use as a context manager; ``advance`` and ``update`` may be called from any thread.
    """

    def __init__(self, label: str, *, total: int, unit: str, enabled: bool = True,
                 completed: int = 0) -> None:
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self._completed = completed
        self._bar = None
        self._task = None
        self._poll: Callable[[], ProgressState] | None = None
        self._interval_s = 1.0
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._succeeded = False

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn(f"{{task.completed:.0f}}/{{task.total:.0f}} {self.unit}"),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total,
                                            completed=self._completed, info="")
            if self._poll is not None:
                self._poller = threading.Thread(target=self._run_poll, daemon=True,
                                                name="hypernym-progress")
                self._poller.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._succeeded = exc_type is None
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        if self._bar is not None:
            self._bar.stop()

    def advance(self, units: float = 1) -> None:
        """``units`` more done."""
        if self._bar is not None:
            self._bar.advance(self._task, units)

    def update(self, state: ProgressState) -> None:
        """Show ``state`` (completed is capped at the total)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=min(state.completed, self.total),
                             description=state.description, info=state.info)

    def polled(self, poll: Callable[[], ProgressState], *,
               interval_s: float = 1.0) -> ProgressBar:
        """Draw ``poll()`` every ``interval_s`` from a background thread while the bar is open.
        A block that ends without an exception leaves the bar full: the polled source may
        report only every few units."""
        self._poll, self._interval_s = poll, interval_s
        return self

    def _run_poll(self) -> None:
        while True:
            stopping = self._stop.wait(self._interval_s)
            self.update(self._poll())
            if stopping:
                if self._succeeded:
                    self._bar.update(self._task, completed=self.total)
                return
