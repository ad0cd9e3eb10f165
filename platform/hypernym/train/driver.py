"""Driver side of a training run: preflight, open the MLflow run, fit on Ray Train, register.

Pretraining and fine-tuning both come through `run_training`; they differ in the recipe (the
model's start, what trains) and the task, not in code. Everything a recipe can get wrong is found
in `preflight`, before an MLflow run or Ray work exists. The MLflow run is created here, in the
driver, and its id handed to the workers, so a restarted worker group keeps logging into the same
run (Ray's own integration would open a new one).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypernym import tracking
from hypernym.config import FinetuneRecipe, PretrainRecipe
from hypernym.data.dataset import Dataset, open_dataset
from hypernym.data.reader import steps_per_epoch
from hypernym.errors import HypernymError
from hypernym.preflight import check_training
from hypernym.progress import ProgressBar, ProgressState
from hypernym.settings import Settings, get_settings
from hypernym.train.budget import bit_hyperrule
from hypernym.train.model import check_model_kwargs
from hypernym.train.recovery import IN_PROCESS_TAG, STORAGE_TAG, check_resume, failed_run
from hypernym.train.registration import register_checkpoint
from hypernym.train.run_storage import checkpoint_uri, ray_storage, run_dir, run_name
from hypernym.train.tasks import Task, build_task

__all__ = ["FitOutcome", "RunPlan", "TrainResult", "fit_in_process", "fit_on_ray", "open_run",
           "preflight", "run_training"]


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    registered: Any = None  # hypernym.registry.models.RegisteredModel
    wall_s: float = 0.0
    checkpoint: Any = None  # the last ray.train.Checkpoint, readable from the run's storage
    dataset: Dataset | None = None  # the run's dataset, opened once in the driver


@dataclass
class FitOutcome:
    """What fitting left: the last epoch's metrics and the last checkpoint (a Ray Train
    ``Checkpoint``, or a `hypernym.train.checkpointing.LocalCheckpoint`)."""

    metrics: dict[str, float]
    checkpoint: Any = None


@dataclass
class RunPlan:
    """A checked run: the recipe to run (with the budget rule applied), its dataset (opened
    once), its task, and the backbone pinned to a version."""

    recipe: PretrainRecipe | FinetuneRecipe
    dataset: Dataset
    task: Task
    steps_per_epoch: int
    backbone: str | None = None  # NAME/VERSION: an alias may move mid-run
    parent_model_id: str | None = None
    budget: str | None = None


def run_training(recipe: PretrainRecipe | FinetuneRecipe, *, task: Task | None = None,
                 show_progress: bool = True, settings: Settings | None = None,
                 resume: str | None = None, tags: dict[str, str] | None = None,
                 callbacks: list | None = None, in_process: bool = False) -> TrainResult:
    """Train ``recipe`` on Ray Train (or, with ``in_process``, in this process, without Ray)
    and register the result if ``recipe.registry.name`` is set.

    Args:
        task: the task to train (the recipe's own, `hypernym.train.tasks.build_task`, when
            None); a custom `Task` is pickled to the workers.
        resume: an MLflow run id of an earlier run of this recipe: continue it from its latest
            checkpoint, logging into the same run. The number of workers may differ (the
            reader then schedules the rest of the interrupted epoch over the new workers);
            the model and the dataset may not.
        tags: extra tags of a new MLflow run (a sweep's trials: ``mlflow.parentRunId``).
        callbacks: Ray Train callbacks (a sweep's trials: Tune's ``TuneReportCallback``).
        in_process: train one worker in this process (the recipe's ``scaling`` but
            ``use_gpu`` is not used): the same core, MLflow run, checkpoints on run storage,
            registration and resume, without Ray's start-up.

    Raises:
        HypernymError: before any Ray work, for a missing dataset, a dataset too small for the
            batch, a backbone reference that does not resolve, ``model.kwargs`` the model
            does not take, or a recipe the task refuses.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    plan = preflight(recipe, task=task, settings=settings,
                     world=1 if in_process else recipe.scaling.num_workers)
    run_id = open_run(plan, resume=resume, settings=settings, in_process=in_process,
                      tags={**(tags or {}), **({IN_PROCESS_TAG: "true"} if in_process else {})})
    logger = tracking.RunLogger(run_id, tracking_uri=settings.tracking_uri)
    status = "FAILED"
    try:
        if not resume:  # params are immutable in MLflow: a resumed run keeps the first ones
            _record_inputs(plan, run_id, logger, settings)
        # The driver's heartbeat tells a live run from one whose driver died with its head.
        with _watch(run_id, settings, label=plan.recipe.kind, enabled=show_progress,
                    total_steps=plan.steps_per_epoch * plan.recipe.train.epochs), \
                tracking.heartbeat(run_id, tracking_uri=settings.tracking_uri):
            if in_process:
                result = fit_in_process(plan, run_id, settings=settings, logger=logger)
            else:
                result = fit_on_ray(plan, run_id, settings=settings, callbacks=callbacks)
        metrics = result.metrics
        registered = None
        checkpoint_path = (checkpoint_uri(result.checkpoint, settings.storage)
                           if result.checkpoint else None)
        if plan.recipe.registry.name and result.checkpoint is not None:
            with result.checkpoint.as_directory() as ckpt_dir:  # verified against its manifest
                registered = register_checkpoint(plan.recipe, ckpt_dir, run_id, metrics=metrics,
                                                 settings=settings, dataset=plan.dataset,
                                                 task=plan.task, checkpoint_name=checkpoint_path)
        status = "FINISHED"
        return TrainResult(
            run_id=run_id, metrics=metrics, registered=registered, checkpoint=result.checkpoint,
            dataset=plan.dataset, checkpoint_path=checkpoint_path,
            wall_s=time.perf_counter() - started)
    except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler ends with sys.exit
        status = "KILLED"
        raise
    except Exception as exc:  # one line: what failed, and the command that resumes the run
        raise failed_run(exc, plan.recipe, run_id, settings, in_process=in_process) from exc
    finally:
        logger.finish(status)


def preflight(recipe, *, task: Task | None = None, settings: Settings,
              world: int | None = None) -> RunPlan:
    """Everything checked before an MLflow run or Ray work exists: every location reachable,
    the dataset big enough for a step, the budget, the task, the backbone, ``model.kwargs``.

    Args:
        world: the workers that will train (``scaling.num_workers`` by default).
    """
    from hypernym.registry.models import resolve

    check_training(settings, data_path=recipe.data.path)
    dataset = open_dataset(recipe.data.path)
    world, batch = world or recipe.scaling.num_workers, recipe.data.batch_size
    steps = steps_per_epoch(dataset.manifest, "train", world_size=world, batch_size=batch)
    if steps == 0:
        raise HypernymError(
            f"{recipe.data.path} has {dataset.num_samples('train')} training samples, fewer than "
            f"one step of {world} workers x batch {batch}: lower data.batch_size or "
            "scaling.num_workers")
    # A fine-tune without train.epochs gets BiT-HyperRule's budget for its dataset's size.
    recipe, budget = bit_hyperrule(recipe, train_images=dataset.num_samples("train"),
                                   updates_per_epoch=-(-steps // recipe.train.accum_steps))
    task = task or build_task(recipe, dataset)  # a recipe the task refuses fails here
    plan = RunPlan(recipe=recipe, dataset=dataset, task=task, steps_per_epoch=steps,
                   budget=budget)
    if isinstance(recipe, FinetuneRecipe) and recipe.backbone:
        version = resolve(recipe.backbone, settings=settings)
        plan.backbone = f"{version.name}/{version.version}"
        plan.parent_model_id = getattr(version, "model_id", None)
    check_model_kwargs(recipe, num_outputs=task.num_outputs, backbone=plan.backbone)
    return plan


def open_run(plan: RunPlan, *, resume: str | None, tags: dict[str, str] | None,
             settings: Settings, in_process: bool = False) -> str:
    """A new MLflow run, tagged with what defines it, or the run to resume, reopened (where it
    trains, ``in_process`` or on Ray Train, must be where it trained before)."""
    recipe, dataset = plan.recipe, plan.dataset
    tracking.ensure_experiment(recipe.experiment, settings=settings)
    if resume:
        return _reopen(resume, plan, settings, in_process=in_process)
    return tracking.start_run(
        experiment=recipe.experiment, run_name=recipe.name, settings=settings,
        tags={"hypernym.kind": recipe.kind, "hypernym.task": plan.task.name,
              "hypernym.dataset_fingerprint": dataset.fingerprint,
              "hypernym.backbone": plan.backbone or "", "mlflow.source.git.commit": _git_commit(),
              "hypernym.budget": plan.budget or "",
              **{f"hypernym.{k}": v for k, v in plan.task.lineage().items()}, **(tags or {})})


def _record_inputs(plan: RunPlan, run_id: str, logger, settings: Settings) -> None:
    """A new run's params, resolved recipe and lineage (the dataset, the backbone's model), and
    where its checkpoints go (what `hypernym runs` and a resume read)."""
    recipe, dataset = plan.recipe, plan.dataset
    logger.set_tags({STORAGE_TAG: run_dir(settings.storage, recipe.name, run_id)})
    logger.log_params(recipe.model_dump(mode="json"))
    logger.log_dict(recipe.model_dump(mode="json"), "recipe.json")
    tracking.log_inputs(run_id, dataset_name=dataset.name, fingerprint=dataset.fingerprint,
                        uri=dataset.root, model_id=plan.parent_model_id, settings=settings)


def _reopen(run_id: str, plan: RunPlan, settings: Settings, *, in_process: bool) -> str:
    """Check that ``run_id`` is a run of this recipe on this dataset (and, for a distilled
    model, with this teacher), trained where it resumes, and mark it running."""
    recipe, dataset = plan.recipe, plan.dataset
    run = tracking.run_summary(run_id, settings=settings)
    tags = run.tags
    if run.name != recipe.name or tags.get("hypernym.kind") != recipe.kind:
        raise HypernymError(f"run {run_id} is {tags.get('hypernym.kind')} {run.name!r},"
                            f" not {recipe.kind} {recipe.name!r}: resume it with its own recipe")
    if tags.get("hypernym.dataset_fingerprint") != dataset.fingerprint:
        raise HypernymError(f"run {run_id} trained on another dataset (fingerprint "
                            f"{tags.get('hypernym.dataset_fingerprint', '?')[:12]}, now "
                            f"{dataset.fingerprint[:12]}): resume on the same dataset")
    for key, value in plan.task.lineage().items():
        if tags.get(f"hypernym.{key}", value) != value:
            raise HypernymError(f"run {run_id} trained with {key} {tags[f'hypernym.{key}']}, "
                                f"now {value}: resume it with what it started with")
    if run.status == "FINISHED":
        raise HypernymError(f"run {run_id} already finished: start a new run instead")
    check_resume(run_id, run_dir(settings.storage, recipe.name, run_id), settings,
                 in_process=in_process)
    tracking.mark_running(run_id, settings=settings)
    tracking.note_resume(run_id, settings=settings)  # its time marks the gap in the history
    return run_id


def fit_in_process(plan: RunPlan, run_id: str, *, settings: Settings, logger) -> FitOutcome:
    """Train one worker in this process with the core, rank 0's ``logger`` logging, checkpoints
    written to run storage where Ray Train would put them; a resumed run restores the newest
    whole one (`hypernym.train.restore.restore_newest_local`)."""
    import torch

    from hypernym.train.checkpointing import LocalCheckpoints
    from hypernym.train.core import Trainer
    from hypernym.train.records import SampleTrace
    from hypernym.train.restore import restore_newest_local

    recipe = plan.recipe
    use_gpu = recipe.scaling.use_gpu and torch.cuda.is_available()
    trainer = Trainer.from_recipe(recipe, dataset=plan.dataset, task=plan.task,
                                  backbone=plan.backbone, settings=settings,
                                  device="cuda" if use_gpu else "cpu", logger=logger)
    where = run_dir(settings.storage, recipe.name, run_id)
    restored = restore_newest_local(where)
    if restored is not None:
        trainer.load_state_dict(restored.state)
        if restored.skipped:
            logger.set_tags(restored.tags())  # which checkpoints were skipped, and why
    hooks = LocalCheckpoints(where, keep=recipe.train.keep_checkpoints,
                             recipe=recipe.model_dump(mode="json"), registry=recipe.registry,
                             ema=recipe.train.ema_decay is not None)
    trainer.hooks = hooks
    trace = SampleTrace.open(os.environ.get("HYPERNYM_SAMPLE_TRACE"), 0,
                             trainer.state.global_step)
    if trace is not None:
        trainer.records.append(trace)
    if recipe.train.system_metrics_s:
        logger.start_system_metrics(interval_s=recipe.train.system_metrics_s)
    metrics = trainer.fit()
    return FitOutcome(metrics=metrics,
                      checkpoint=hooks.latest or (restored.source if restored else None))


def fit_on_ray(plan: RunPlan, run_id: str, *, settings: Settings,
               callbacks: list | None = None) -> FitOutcome:
    """Train on a Ray Train worker group (`hypernym.train.ray_worker`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from hypernym.runtime import ensure_ray
    from hypernym.train.ray_worker import WorkerJob, train_loop_per_worker

    ensure_ray(settings=settings)
    recipe, scaling = plan.recipe, plan.recipe.scaling
    storage_path, storage_filesystem = ray_storage(settings.storage)
    job = WorkerJob(recipe=recipe, task=plan.task, backbone=plan.backbone, settings=settings,
                    run_id=run_id, sample_trace=os.environ.get("HYPERNYM_SAMPLE_TRACE"))
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=RunConfig(
            # Named by the MLflow run: rerunning a recipe starts fresh, resuming names the run.
            name=run_name(recipe.name, run_id),
            storage_path=storage_path, storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=recipe.train.keep_checkpoints),
            callbacks=callbacks))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return FitOutcome(metrics=dict(result.return_value or result.metrics or {}),
                      checkpoint=result.checkpoint)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _watch(run_id: str, settings: Settings, *, total_steps: int, label: str,
           enabled: bool) -> ProgressBar:
    """A progress bar fed by the run's MLflow metrics (works for local and remote clusters)."""
    bar = ProgressBar(f"{label}: starting Ray workers", total=total_steps, unit="steps",
                      enabled=enabled)

    def poll() -> ProgressState:
        m = tracking.latest_metrics(run_id, tracking_uri=settings.tracking_uri)
        info = " ".join(f"{k.split('/')[-1]} {m[k]:.3f}"
                        for k in ("train/loss", "val/top1", "val/map") if k in m)
        desc = f"{label}: epoch {int(m.get('epoch', 0))}" if m else label
        return ProgressState(int(m.get("progress/step", 0)), desc, info)

    return bar.polled(poll, interval_s=1.0)
