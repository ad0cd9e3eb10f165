"""The tracking adapter's reads and writes against embedded MLflow (SQLite), read back with
MlflowClient as a user would: inputs (lineage), run summaries, child runs, metric history and
run ends."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from hypernym import tracking
from hypernym.errors import HypernymError
from hypernym.settings import get_settings

pytestmark = pytest.mark.integration


def test_inputs_summary_history_and_end():
    settings = get_settings()
    run_id = tracking.start_run(experiment="t", run_name="fit", settings=settings,
                                tags={"hypernym.kind": "finetune", "empty": ""})
    tracking.log_inputs(run_id, dataset_name="digits", fingerprint="d" * 64, uri="/data/digits",
                        settings=settings)
    tracking.log_inputs(run_id, dataset_name="held-out", fingerprint="e" * 64, uri="/data/ho",
                        context="eval", settings=settings)
    logger = tracking.RunLogger(run_id, tracking_uri=settings.tracking_uri)
    logger.log_params({"optim": {"lr": 0.1}})
    for step, value in ((2, 0.5), (1, 0.25), (3, 0.75)):  # logged out of step order
        logger.log_metrics({"val/top1": value}, step=step)
    assert logger.flush()

    run = tracking.run_summary(run_id, settings=settings)
    assert (run.run_id, run.name, run.status) == (run_id, "fit", "RUNNING")
    assert run.tags["hypernym.kind"] == "finetune" and "empty" not in run.tags
    assert run.params == {"optim.lr": "0.1"} and run.metrics == {"val/top1": 0.75}
    by_name = {d.name: d for d in run.datasets}
    assert (by_name["digits"].context, by_name["held-out"].context) == ("train", "eval")
    assert json.loads(by_name["digits"].source) == {"uri": "/data/digits",
                                                    "fingerprint": "d" * 64}
    assert by_name["digits"].digest == "d" * 32
    assert tracking.metric_history(run_id, "val/top1", settings=settings) == [0.25, 0.5, 0.75]

    tracking.end_run(run_id, "KILLED", settings=settings)
    assert MlflowClient(settings.tracking_uri).get_run(run_id).info.status == "KILLED"
    with pytest.raises(HypernymError, match="no MLflow run 'nope'"):
        tracking.run_summary("nope", settings=settings)


def test_child_runs_by_parent_and_tag():
    settings = get_settings()
    parent = tracking.start_run(experiment="sweeps", run_name="sweep", settings=settings)
    other = tracking.start_run(experiment="sweeps", run_name="other", settings=settings)
    children = {trial: tracking.start_run(
        experiment="sweeps", run_name=trial, settings=settings,
        tags={"mlflow.parentRunId": parent, "hypernym.sweep.trial_id": trial})
        for trial in ("t0", "t1")}
    tracking.start_run(experiment="sweeps", run_name="stray", settings=settings,
                       tags={"mlflow.parentRunId": other, "hypernym.sweep.trial_id": "t0"})
    found = tracking.child_runs(parent, experiment="sweeps", settings=settings)
    assert sorted(r.run_id for r in found) == sorted(children.values())
    (t1,) = tracking.child_runs(parent, experiment="sweeps", settings=settings,
                                tags={"hypernym.sweep.trial_id": "t1"})
    assert t1.run_id == children["t1"] and t1.tags["hypernym.sweep.trial_id"] == "t1"
    assert tracking.child_runs(parent, experiment="missing", settings=settings) == []

