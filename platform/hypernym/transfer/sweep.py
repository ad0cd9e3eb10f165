"""Hyperparameter sweeps: Ray Tune over training runs, with ASHA early stopping.

Ray 2.60 runs Ray Train V2, whose trainers Tune cannot take directly (``Tuner(TorchTrainer(...))``
raises ``TuneError: Improper 'run'``). The V2 pattern is used instead: each trial is a Tune
function that runs one ordinary training run (`run_training`, so a trial is exactly what
``hypernym finetune`` would do with those values) whose ``TorchTrainer`` reports every epoch to
Tune through ``TuneReportCallback``. ASHA (``AsyncHyperBandScheduler``, on the ``epoch`` the loop
reports) stops the trials that fall behind; ``max_concurrent_trials`` bounds how many run at once.

Tracking: one MLflow run for the sweep; every trial is its child run (tag
``mlflow.parentRunId``). A trial ASHA stopped is killed with its actor and cannot close its own
run, so the sweep marks it KILLED. The best trial (by the sweep's metric at its last epoch) is
registered from its last checkpoint, with the sweep's run id in its lineage (version tag
``sweep_run_id`` and the card's ``selected.sweep``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from hypernym import tracking
from hypernym.config import TASK_METRICS, apply_overrides, parse_recipe
from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings
from hypernym.transfer.space import load_space, parse_space, to_tune, with_values

__all__ = ["SweepResult", "TrialSummary", "run_sweep", "sweep_file"]

log = logging.getLogger(__name__)
_TRIAL_TAG = "hypernym.sweep.trial_id"


@dataclass
class TrialSummary:
    """One trial: its values, MLflow run, last metrics and how it ended."""

    trial_id: str
    values: dict[str, Any]
    run_id: str | None
    epochs: int
    metric: float | None
    stopped_early: bool
    error: str | None = None


@dataclass
class SweepResult:
    """What a sweep produced."""

    run_id: str
    metric: str
    mode: str
    trials: list[TrialSummary]
    best: TrialSummary | None
    registered: Any = None  # hypernym.registry.models.RegisteredModel
    placement_groups_removed: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def sweep_file(recipe_path: str | Path, space_path: str | Path, overrides: list[str] = (),
               **kwargs) -> SweepResult:
    """``run_sweep`` on a recipe file (with ``--set`` overrides) and a space file."""
    path = Path(recipe_path)
    if not path.is_file():
        raise HypernymError(f"recipe file not found: {path}")
    raw = apply_overrides(yaml.safe_load(path.read_text()) or {}, list(overrides))
    return run_sweep(raw, load_space(space_path, raw), **kwargs)


def run_sweep(recipe_raw: dict[str, Any], space: dict[str, tuple[str, list]] | dict, *,
              trials: int, max_concurrent: int | None = None, metric: str = "auto",
              mode: str = "max", grace_period: int = 1, reduction_factor: float = 2,
              settings: Settings | None = None) -> SweepResult:
    """Run ``trials`` samples of ``space`` (``grid`` values multiply them) over a pretrain or
    finetune recipe, stop laggards with ASHA, and register the best trial when the recipe's
    ``registry.name`` is set.

    Args:
        recipe_raw: the recipe as a mapping (validated here, and for every trial).
        space: a checked space (``hypernym.transfer.space``), or a raw one to check.
        metric: an epoch metric every trial reports (a validation metric: ``val/...``);
            ``auto``: the task's own (``val/top1`` for classification, ``val/map`` for
            multilabel).
        mode: ``max`` or ``min``.
        grace_period: epochs every trial runs before ASHA may stop it.
    """
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from hypernym.runtime import ensure_ray

    started = time.perf_counter()
    settings = settings or get_settings()
    recipe = parse_recipe(recipe_raw, source="the recipe")
    if recipe.kind not in ("pretrain", "finetune"):
        raise HypernymError(f"a sweep runs training recipes, not {recipe.kind!r} ones")
    if not all(isinstance(v, tuple) for v in space.values()):
        space = parse_space(space, recipe_raw)
    if metric == "auto":
        metric = f"val/{TASK_METRICS[recipe.task]}"
    if mode not in ("max", "min"):
        raise HypernymError(f"--mode must be max or min, got {mode!r}")
    if not metric.startswith(("val/", "val_ema/")):
        raise HypernymError(f"--metric must be a validation metric (val/...), got {metric!r}")
    if trials < 1:
        raise HypernymError(f"--trials must be at least 1, got {trials}")
    max_epochs = max(_epoch_values(recipe_raw, space))
    if not 1 <= grace_period <= max_epochs:
        raise HypernymError(f"--grace-period must be 1..{max_epochs} (the most epochs a trial "
                            f"runs), got {grace_period}")

    sweep_id = tracking.start_run(experiment=recipe.experiment, run_name=f"{recipe.name}-sweep",
                                  settings=settings, tags={"hypernym.kind": "sweep"})
    logger = tracking.RunLogger(sweep_id, tracking_uri=settings.tracking_uri)
    status = "FAILED"
    try:
        logger.log_params({"sweep.trials": trials, "sweep.metric": metric, "sweep.mode": mode,
                           "sweep.max_concurrent": max_concurrent or 0,
                           "sweep.grace_period": grace_period, "sweep.max_epochs": max_epochs,
                           **{f"space.{k}": f"{s} {a}" for k, (s, a) in space.items()}})
        logger.log_dict(recipe.model_dump(mode="json"), "recipe.json")
        ensure_ray(settings=settings)
        groups_before = _placement_groups()
        release = _Release(sweep_id, recipe.experiment, settings)
        trainable = tune.with_parameters(_trial, base=_trial_base(recipe_raw), sweep_id=sweep_id,
                                         settings=settings)
        # The trial function only waits on its TorchTrainer: the CPUs go to the training
        # workers. Tune refuses an empty bundle, so the trial reserves a little memory instead.
        trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 64 * 2**20})
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune(space),
            tune_config=tune.TuneConfig(
                num_samples=trials, max_concurrent_trials=max_concurrent,
                scheduler=AsyncHyperBandScheduler(
                    time_attr="epoch", metric=metric, mode=mode, max_t=max_epochs,
                    grace_period=grace_period, reduction_factor=reduction_factor)),
            run_config=tune.RunConfig(name=f"{recipe.name}-sweep-{sweep_id[:12]}",
                                      storage_path=str(settings.runs_dir), verbose=0,
                                      callbacks=[release]),
        )
        grid = tuner.fit()
        removed = release.removed + _release(groups_before)
        summaries = _summaries(grid, sweep_id, recipe.experiment, metric, max_epochs, settings)
        finished = [t for t in summaries if t.metric is not None and t.error is None]
        best = (max if mode == "max" else min)(finished, key=lambda t: t.metric) \
            if finished else None
        result = SweepResult(run_id=sweep_id, metric=metric, mode=mode, trials=summaries,
                             best=best, placement_groups_removed=removed)
        logger.log_metrics({"sweep/trials": len(summaries),
                            "sweep/stopped_early": sum(t.stopped_early for t in summaries),
                            "sweep/failed": sum(t.error is not None for t in summaries),
                            **({f"best/{metric}": best.metric} if best else {})}, step=0)
        if best is None:
            raise HypernymError(f"no trial of sweep {sweep_id} reported {metric!r}; see the "
                                "trials' runs in MLflow")
        logger.set_tags({"hypernym.sweep.best_run_id": best.run_id or ""})
        if recipe.registry.name:
            result.registered = _register_best(recipe_raw, grid, best, sweep_id, metric, settings)
        status = "FINISHED"
        result.wall_s = time.perf_counter() - started
        return result
    finally:
        logger.finish(status)


def _trial_base(recipe_raw: dict[str, Any]) -> dict[str, Any]:
    """Trials register nothing (the sweep registers the best) and take no mid-epoch
    checkpoints (ASHA counts the epochs the loop reports)."""
    return apply_overrides(recipe_raw, ["registry.name=null", "train.checkpoint_every=0"])


def _trial(config: dict[str, Any], *, base: dict[str, Any], sweep_id: str,
           settings: Settings) -> None:
    """One Tune trial: an ordinary training run, reporting each epoch to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from hypernym.train.driver import run_training

    trial_id = ray.tune.get_context().get_trial_id()
    raw = with_values(base, config)
    raw["name"] = f"{raw.get('name', 'sweep')}-{trial_id}"
    run_training(parse_recipe(raw, source=f"trial {trial_id}"), show_progress=False,
                 settings=settings, callbacks=[TuneReportCallback()],
                 tags={"mlflow.parentRunId": sweep_id, _TRIAL_TAG: trial_id})


def _epoch_values(recipe_raw: dict[str, Any], space) -> list[int]:
    """Every ``train.epochs`` a trial may run (ASHA's ``max_t``)."""
    sampler, args = space.get("train.epochs", (None, None))
    if sampler in ("choice", "grid"):
        return [int(v) for v in args]
    if sampler == "randint":
        return [int(args[1]) - 1]
    if sampler is not None:
        return [int(args[1])]
    return [parse_recipe(recipe_raw, source="the recipe").train.epochs]


def _summaries(grid, sweep_id: str, experiment: str, metric: str, max_epochs: int,
               settings: Settings) -> list[TrialSummary]:
    """Each trial's outcome, and its child run closed: KILLED when ASHA stopped it."""
    runs = {r.tags.get(_TRIAL_TAG): r for r in tracking.child_runs(
        sweep_id, experiment=experiment, settings=settings)}
    out = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        run = runs.get(trial_id)
        epochs = int(metrics.get("epoch", 0))
        error = str(result.error) if result.error else None
        stopped = error is None and epochs < int(result.config.get("train.epochs", max_epochs))
        if run is not None and stopped and run.status != "KILLED":
            # Stopping the trial aborts its TorchTrainer, so the run may have closed as FAILED.
            _close(run.run_id, "KILLED", "asha", settings)
        elif run is not None and not error and run.status != "FINISHED":
            # All epochs ran; Tune ended the actor at max_t (aborting the trainer's teardown).
            _close(run.run_id, "FINISHED", None, settings)
        elif run is not None and run.status == "RUNNING":
            # Tune ends a trial's actor as soon as ASHA says stop, also at max_t (after the last
            # epoch's report, before the run could close itself): all epochs ran -> FINISHED.
            status = "FAILED" if error else "KILLED" if stopped else "FINISHED"
            why = None if status == "FINISHED" else "asha" if stopped else "error"
            _close(run.run_id, status, why, settings)
        out.append(TrialSummary(
            trial_id=trial_id, values=dict(result.config), epochs=epochs,
            run_id=run.run_id if run is not None else None,
            metric=float(metrics[metric]) if metric in metrics else None,
            stopped_early=stopped, error=error))
    return out


def _close(run_id: str, status: str, stopped_by: str | None, settings: Settings) -> None:
    """End a trial's run as ``status``; ``stopped_by`` (asha, error) goes in its tags."""
    if stopped_by:
        tracking.set_run_tags(run_id, {"hypernym.sweep.stopped": stopped_by}, settings=settings)
    tracking.end_run(run_id, status, settings=settings)


def _register_best(recipe_raw, grid, best: TrialSummary, sweep_id: str, metric: str,
                   settings: Settings):
    from hypernym.train.registration import register_checkpoint

    result = next(r for r in grid if (r.metrics or {}).get("trial_id") == best.trial_id)
    path = result.metrics.get("checkpoint_path")
    if not path:
        raise HypernymError(f"the best trial {best.trial_id} left no checkpoint to register")
    recipe = parse_recipe(with_values(recipe_raw, best.values), source="the best trial")
    return register_checkpoint(
        recipe, path, best.run_id, metrics=dict(result.metrics), settings=settings,
        sweep={"run_id": sweep_id, "trial_id": best.trial_id, "metric": metric,
               "value": best.metric, "values": best.values})


def _release_trial(trial_id: str, sweep_id: str, experiment: str, settings: Settings) -> list:
    """Remove the placement group a finished or stopped trial's worker group still holds.

    Ray Train V2 leaves it reserved when Tune stops the trial (Ray issue 54305: its cleaner
    needs the state API); the next trials would wait for those CPUs. The trial's run records
    its group (tag ``hypernym.placement_group``), so only this sweep's groups are touched.
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    runs = tracking.child_runs(sweep_id, experiment=experiment, tags={_TRIAL_TAG: trial_id},
                               settings=settings)
    table = _placement_groups()
    removed = []
    for run in runs:
        pg_id = run.tags.get("hypernym.placement_group")
        if pg_id and table.get(pg_id, {}).get("state") in ("CREATED", "PENDING"):
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
            removed.append(pg_id)
    if removed:
        log.warning("trial %s ended with its placement group still reserved: removed %s",
                    trial_id, ", ".join(removed))
    return removed


def _placement_groups() -> dict[str, dict]:
    from ray.util import placement_group_table

    return placement_group_table()


def _release(before: dict[str, dict]) -> list[str]:
    """Remove placement groups the sweep's trials left reserved.

    Users report Ray Train V2 worker groups' placement groups surviving a trial that ASHA
    stopped (Ray issue 54305); one left CREATED holds its CPUs until the job ends. Only groups
    created during this sweep are considered.
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    left = [pg_id for pg_id, info in _placement_groups().items()
            if pg_id not in before and info["state"] in ("CREATED", "PENDING")]
    for pg_id in left:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
    if left:
        log.warning("removed %d placement group(s) the sweep's stopped trials left reserved: %s",
                    len(left), ", ".join(left))
    return left



class _Release(Callback):
    """Frees a trial's worker-group reservation as soon as Tune ends the trial."""

    def __init__(self, sweep_id: str, experiment: str, settings: Settings) -> None:
        self.args = (sweep_id, experiment, settings)
        self.removed: list[str] = []

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.removed += _release_trial(trial.trial_id, *self.args)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.removed += _release_trial(trial.trial_id, *self.args)
