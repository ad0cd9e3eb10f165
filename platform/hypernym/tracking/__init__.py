"""Run tracking: the one place hypernym talks to MLflow's tracking API.

MLflow is imported only inside this package (and by `hypernym.registry.pyfunc_model`, the file
MLflow itself loads); the rest of hypernym calls these functions. See docs/architecture.md.
"""

from hypernym.tracking.logger import RunLogger, flatten
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

__all__ = ["RunLogger", "RunSummary", "client", "ensure_experiment", "flatten", "latest_metrics",
           "log_lineage", "mark_running", "mlflow_module", "run_summary", "start_run",
           "tracking_uri"]
