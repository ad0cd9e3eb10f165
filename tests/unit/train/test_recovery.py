"""A failed run's one line, and when a run counts as abandoned (no Ray, no MLflow)."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from hypernym.tracking.liveness import RunRecord
from hypernym.train.recovery import describe_failure, resume_command

GLOO = ("Traceback (most recent call last):\n  File \"loop.py\", line 9, in step\n"
        "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed "
        "by peer [127.0.0.4]:46061")


def test_a_lost_worker_group_names_each_rank_in_one_line():
    died = ActorDiedError()
    error = WorkerGroupError("worker errors", {0: RuntimeError(GLOO), 1: died})
    line = describe_failure(error, max_failures=0)
    assert "\n" not in line
    assert line.startswith("the worker group failed (scaling.max_failures 0 spent): rank 0: "
                           "RuntimeError: [../third_party/gloo")
    assert "Connection closed by peer" in line and "; rank 1: " in line


def test_other_failures_keep_their_own_last_line():
    assert describe_failure(ControllerError(OSError("snapshot write failed"))) == \
        "Ray Train's controller failed: OSError: snapshot write failed"
    assert describe_failure(ValueError("bad\nworse")) == "ValueError: worse"


def test_the_resume_command_depends_on_where_the_driver_ran(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert resume_command("pretrain", "abc") == "hypernym pretrain --resume abc"
    assert resume_command("finetune", "abc", in_process=True) == (
        "hypernym finetune --resume abc --in-process")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert resume_command("pretrain", "abc") == "hypernym submit --resume abc"


def _record(status="RUNNING", **times):
    base = {"start_time": 1000.0, "heartbeat": None, "last_metric": None, "end_time": None}
    return RunRecord(run_id="r", name="n", experiment="e", status=status, kind="pretrain",
                     tags={}, **{**base, **times})


@pytest.mark.parametrize(("status", "times", "now", "abandoned"), [
    ("RUNNING", {"heartbeat": 1500.0}, 1550.0, False),           # beating
    ("RUNNING", {"heartbeat": 1500.0}, 1700.0, True),            # silent 200 s > 120 s
    ("RUNNING", {"heartbeat": 1500.0, "last_metric": 1690.0}, 1700.0, False),  # metrics flow
    ("RUNNING", {}, 1100.0, False),                              # just started
    ("RUNNING", {}, 1200.0, True),                               # never heard of since start
    ("FAILED", {"heartbeat": 1000.0}, 9000.0, False),            # failed: not abandoned
])
def test_abandoned_means_running_and_silent(status, times, now, abandoned):
    assert _record(status, **times).abandoned(120.0, now) is abandoned
