"""`hypernym runs list | show | mark-failed` and the resume's recipe, as a user runs them, against
a real MLflow store (embedded SQLite) and run storage on disk, without Ray.

The run here is opened through the tracking adapter the way the trainer opens one (kind,
storage tag, logged recipe), and its storage holds a checkpoint written by `save_state` beside
a ``checkpoint_manager_snapshot.json`` in Ray Train's format. Real Ray Train snapshots and a run
whose driver really died are the rig scenario's (tests/integration/cluster/test_rig.py) and
test_resume's.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from hypernym import tracking
from hypernym.cli import app
from hypernym.settings import get_settings
from hypernym.train.checkpoint import save_state

pytestmark = pytest.mark.integration

RECIPE = {"kind": "pretrain", "name": "night-run", "experiment": "tests",
          "data": {"path": "s3://data/ds"}, "model": {"arch": "test_resnet"},
          "scaling": {"num_workers": 2}}


@pytest.fixture
def abandoned(tmp_path):
    """A RUNNING pretraining run started two hours ago whose driver last beat an hour ago,
    with one checkpoint."""
    from mlflow.tracking import MlflowClient

    settings = get_settings()
    experiment = tracking.ensure_experiment("tests", settings=settings)
    # MLflow's client directly: only it backdates a run's start
    run_id = MlflowClient(settings.tracking_uri).create_run(
        experiment, run_name="night-run", start_time=int((time.time() - 7200) * 1000),
        tags={"hypernym.kind": "pretrain"}).info.run_id
    storage = tmp_path / "runs" / f"night-run-{run_id[:12]}"
    tracking.set_run_tags(run_id, {"hypernym.storage": str(storage),
                                   "hypernym.heartbeat": f"{time.time() - 3600:.0f}"},
                          settings=settings)
    tracking.log_run_dict(run_id, RECIPE, "recipe.json", settings=settings)
    save_state(storage / "step-00000005",
               {"model": {"w": torch.ones(3)}, "position": {"epoch": 0, "global_step": 5}},
               RECIPE)
    (storage / "checkpoint_manager_snapshot.json").write_text(json.dumps({
        "checkpoint_results": [{"checkpoint_dir_name": "step-00000005", "metrics": {}}],
        "checkpoint_report_indices": [4]}))
    return run_id, storage


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_list_show_and_mark_failed_an_abandoned_run(abandoned):
    run_id, storage = abandoned
    listed = cli("runs", "list").splitlines()
    assert listed[0].split() == ["run", "id", "recipe", "kind", "state", "last", "checkpoint",
                                 "last", "metric"]
    assert listed[1].startswith(f"{run_id}  night-run  pretrain  abandoned  step 5, 0 epochs "
                                "done, ")
    assert listed[2].startswith("abandoned: RUNNING, but no heartbeat or metric for over 10m")
    assert " running " in cli("runs", "list", "--stale-after", "2h").splitlines()[1]

    shown = cli("runs", "show", run_id, "--verify")
    assert "state:        abandoned (MLflow status RUNNING, last heard from 60 min ago)" in shown
    assert f"storage:      {storage}\n" in shown
    assert "  step-00000005           step 5, 0 epochs done, written " in shown
    assert "[verified]" in shown
    assert f"resume:       hypernym submit --resume {run_id}\n" in shown

    (storage / "step-00000005" / "state.pt").write_bytes(b"cut short")
    assert "[NOT WHOLE: state.pt is 9 bytes, its manifest says " in cli(
        "runs", "show", run_id, "--verify")

    closed = cli("runs", "mark-failed", run_id, "--reason", "head lost at 03:12")
    assert closed.startswith(f"run {run_id}: FAILED (marked failed by hand: head lost at "
                             "03:12 (nothing heard for ")
    assert " failed " in cli("runs", "list").splitlines()[1]
    shown = cli("runs", "show", run_id)
    assert "failure:      marked failed by hand: head lost at 03:12" in shown


def test_mark_failed_refuses_a_live_run_and_a_finished_one(abandoned):
    run_id, _ = abandoned
    tracking.set_run_tags(run_id, {"hypernym.heartbeat": f"{time.time():.0f}"})
    result = CliRunner().invoke(app, ["runs", "mark-failed", run_id])
    assert "was heard from 0 s ago: its driver may still be running" in str(result.exception)
    tracking.end_run(run_id, "FINISHED")
    result = CliRunner().invoke(app, ["runs", "mark-failed", run_id])
    assert "finished: there is nothing to close" in str(result.exception)
    assert cli("runs", "list") == "no unfinished training runs (--all: finished too)\n"
    assert " finished " in cli("runs", "list", "--all").splitlines()[1]


def test_a_resume_without_a_recipe_file_takes_the_runs_own(abandoned):
    from hypernym.errors import HypernymError
    from hypernym.runs import recipe_of_run
    from hypernym.runs.resume import check_resumable

    run_id, _ = abandoned
    recipe = recipe_of_run(run_id, ["scaling.num_workers=1"])
    assert (recipe.name, recipe.kind, recipe.scaling.num_workers) == ("night-run", "pretrain", 1)
    check_resumable(run_id, recipe)  # abandoned: resumable
    other = recipe.model_copy(update={"name": "day-run"})
    with pytest.raises(HypernymError, match="is pretrain 'night-run', not pretrain 'day-run'"):
        check_resumable(run_id, other)
    tracking.set_run_tags(run_id, {"hypernym.heartbeat": f"{time.time():.0f}"})
    with pytest.raises(HypernymError, match="is still running"):
        check_resumable(run_id, recipe)
    with pytest.raises(HypernymError, match="no MLflow run 'nope'"):
        recipe_of_run("nope")


def test_a_run_trained_in_one_process_resumes_in_one_process(abandoned):
    run_id, storage = abandoned
    tracking.set_run_tags(run_id, {"hypernym.in_process": "true"})
    (storage / "checkpoint_manager_snapshot.json").unlink()  # its own index instead
    (storage / "checkpoints.json").write_text(json.dumps(["step-00000005"]))
    shown = cli("runs", "show", run_id)
    assert "checkpoints recorded by the run, newest first:\n  step-00000005 " in shown
    assert shown.endswith(f"resume:       hypernym pretrain --resume {run_id} --in-process\n")
