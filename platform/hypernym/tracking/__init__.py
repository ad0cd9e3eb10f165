"""Run tracking: the one place hypernym talks to MLflow's tracking API.

MLflow is imported only inside this package (and by `hypernym.registry.pyfunc_model`, the file
MLflow itself loads); the rest of hypernym calls these functions. See docs/architecture.md.
"""

from hypernym.tracking.liveness import (
    RunRecord,
    close_run,
    heartbeat,
    note_resume,
    run_recipe,
    run_record,
    unfinished_runs,
)
from hypernym.tracking.logger import RunLogger, flatten
from hypernym.tracking.reports import (
    end_run,
    get_run_info,
    log_eval_inputs,
    log_run_dict,
    log_run_figure,
    log_run_metrics,
    log_run_table,
    set_run_tags,
)
from hypernym.tracking.runs import (
    RunSummary,
    client,
    ensure_experiment,
    latest_metrics,
    log_lineage,
    mark_running,
    mlflow_module,
    run_summary,
    start_run,
    tracking_uri,
)

__all__ = ["RunLogger", "RunRecord", "RunSummary", "client", "close_run", "end_run",
           "ensure_experiment", "flatten", "get_run_info", "heartbeat", "latest_metrics",
           "log_eval_inputs", "log_lineage", "log_run_dict", "log_run_figure", "log_run_metrics",
           "log_run_table", "mark_running", "mlflow_module", "note_resume", "run_recipe",
           "run_record", "run_summary", "set_run_tags", "start_run", "tracking_uri",
           "unfinished_runs"]
