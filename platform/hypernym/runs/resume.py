"""The recipe a resume runs with: the one the run logged when it started, unless given.

A run's resolved recipe is in its MLflow artifacts (``recipe.json``), so ``hypernym submit
--resume RUN_ID`` needs nothing from the machine the run was started on. A recipe file given
beside ``--resume`` is used instead (with its ``--set`` overrides); either way the run checks,
when it starts, that the recipe's name, kind and dataset are the run's
(`hypernym.train.trainer`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hypernym import tracking
from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings

__all__ = ["check_resumable", "recipe_of_run", "write_recipe_of_run"]


def recipe_of_run(run_id: str, overrides: list[str] | None = None, *,
                  settings: Settings | None = None):
    """The validated recipe run ``run_id`` was started with, ``overrides`` applied.

    Raises:
        HypernymError: no such run, or it is not a training run with a logged recipe.
    """
    from hypernym.config import apply_overrides, parse_recipe

    settings = settings or get_settings()
    record = tracking.run_record(run_id, settings=settings)  # a clear error for a wrong id
    if record.kind not in ("pretrain", "finetune"):
        raise HypernymError(f"run {run_id} ({record.name!r}) is not a training run")
    try:
        raw = tracking.run_recipe(run_id, settings=settings)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing file
        raise HypernymError(f"run {run_id} has no readable recipe.json artifact ({exc}): give "
                            "the recipe file: hypernym submit RECIPE --resume "
                            f"{run_id}") from None
    raw = apply_overrides(raw, list(overrides or []))
    return parse_recipe(raw, source=f"the recipe of run {run_id}")


def write_recipe_of_run(run_id: str, path: Path, overrides: list[str] | None = None, *,
                        settings: Settings | None = None) -> Path:
    """`recipe_of_run` written as YAML to ``path`` (what a job submission uploads)."""
    recipe = recipe_of_run(run_id, overrides, settings=settings)
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    return path


def check_resumable(run_id: str, recipe, *, settings: Settings | None = None) -> None:
    """Before a resume is sent to a cluster: the run exists, is a run of ``recipe``, did not
    finish, and has no live driver (the job checks the same again, and the dataset, when it
    starts).

    Raises:
        HypernymError: naming what does not fit.
    """
    import time

    from hypernym.tracking.liveness import LIVE_S

    record = tracking.run_record(run_id, settings=settings or get_settings())
    if (record.name, record.kind) != (recipe.name, recipe.kind):
        raise HypernymError(f"run {run_id} is {record.kind} {record.name!r}, not "
                            f"{recipe.kind} {recipe.name!r}: resume it with its own recipe "
                            f"(or without one: hypernym submit --resume {run_id})")
    if record.status == "FINISHED":
        raise HypernymError(f"run {run_id} already finished: start a new run instead")
    if record.status == "RUNNING" and record.heartbeat and \
            time.time() - record.heartbeat < LIVE_S:
        raise HypernymError(
            f"run {run_id} is still running (its driver's heartbeat is "
            f"{max(0.0, time.time() - record.heartbeat):.0f} s old): stop its job first, or wait "
            f"{LIVE_S:.0f} s after its driver is gone")
