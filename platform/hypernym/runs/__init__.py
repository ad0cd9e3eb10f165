"""Unfinished training runs: which did not end, whether they look abandoned, how to resume or
close them (``hypernym runs``), from MLflow and the run's storage."""

from hypernym.runs.resume import recipe_of_run, write_recipe_of_run
from hypernym.runs.status import (
    STALE_AFTER_S,
    CheckpointInfo,
    RunView,
    list_runs,
    mark_failed,
    show_run,
)

__all__ = ["STALE_AFTER_S", "CheckpointInfo", "RunView", "list_runs", "mark_failed",
           "recipe_of_run", "show_run", "write_recipe_of_run"]
