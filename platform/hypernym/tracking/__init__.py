"""Run tracking: runs, their metrics and results, and their lineage, in MLflow.

One of the two MLflow adapters (the other is `hypernym.registry`, the model registry): the rest
of hypernym calls these functions and never holds an MLflow client. See docs/architecture.md.
"""

from hypernym.tracking.logger import RunLogger, flatten
from hypernym.tracking.results import (
    log_run_dict,
    log_run_figure,
    log_run_metrics,
    log_run_table,
    set_run_tags,
)
from hypernym.tracking.runs import (
    RunDataset,
    RunSummary,
    check_server,
    child_runs,
    end_run,
    ensure_experiment,
    latest_metrics,
    log_inputs,
    mark_running,
    metric_history,
    run_summary,
    start_run,
)

__all__ = ["RunDataset", "RunLogger", "RunSummary", "check_server", "child_runs", "end_run",
           "ensure_experiment", "flatten", "latest_metrics", "log_inputs", "log_run_dict",
           "log_run_figure", "log_run_metrics", "log_run_table", "mark_running",
           "metric_history", "run_summary", "set_run_tags", "start_run"]
