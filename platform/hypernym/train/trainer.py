"""Driver side of a training run: validate, open the MLflow run, fit on Ray Train, register.

Pretraining and fine-tuning both come through `run_training`; they differ only in the TaskSpec.
The MLflow run is created here, in the driver, and its id handed to the workers, so a restarted
worker group keeps logging into the same run (Ray's own integration would open a new one).
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
from hypernym.data.manifest import Manifest, read_manifest
from hypernym.data.reader import steps_per_epoch
from hypernym.errors import HypernymError
from hypernym.preflight import check_training
from hypernym.progress import ProgressBar, ProgressState
from hypernym.settings import Settings, get_settings
from hypernym.train.budget import bit_hyperrule
from hypernym.train.build import check_model_kwargs, task_spec
from hypernym.train.losses import build_loss
from hypernym.train.recovery import STORAGE_TAG, check_resume, failed_run
from hypernym.train.registration import register_checkpoint
from hypernym.train.run_storage import checkpoint_uri, ray_storage, run_dir, run_name

__all__ = ["TrainResult", "run_training"]


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    registered: Any = None  # hypernym.registry.models.RegisteredModel
    wall_s: float = 0.0
    checkpoint: Any = None  # the last ray.train.Checkpoint, readable from the run's storage


def run_training(
    recipe: PretrainRecipe | FinetuneRecipe,
    *,
    show_progress: bool = True,
    settings: Settings | None = None,
    resume: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list | None = None,
) -> TrainResult:
    """Train ``recipe`` on Ray Train and register the result if ``recipe.registry.name`` is set.

    Args:
        resume: an MLflow run id of an earlier run of this recipe: continue it from its latest
            checkpoint, logging into the same run. The number of workers may differ (the
            reader then schedules the rest of the interrupted epoch over the new workers);
            the model and the dataset may not.
        tags: extra tags of a new MLflow run (a sweep's trials: ``mlflow.parentRunId``).
        callbacks: Ray Train callbacks (a sweep's trials: Tune's ``TuneReportCallback``).

    Raises:
        HypernymError: before any Ray work, for a missing dataset, a dataset too small for the
            batch, a backbone reference that does not resolve, or ``model.kwargs`` the model
            does not take.
    """
    from hypernym.registry.models import resolve

    settings = settings or get_settings()
    started = time.perf_counter()
    check_training(settings, data_path=recipe.data.path)  # before any MLflow run or Ray work
    manifest = read_manifest(recipe.data.path)
    world, batch = recipe.scaling.num_workers, recipe.data.batch_size
    steps = steps_per_epoch(manifest, "train", world_size=world, batch_size=batch)
    if steps == 0:
        raise HypernymError(
            f"{recipe.data.path} has {manifest.num_samples('train')} training samples, fewer than "
            f"one step of {world} workers x batch {batch}: lower data.batch_size or "
            "scaling.num_workers"
        )
    # A fine-tune without train.epochs gets BiT-HyperRule's budget for its dataset's size.
    recipe, budget = bit_hyperrule(recipe, train_images=manifest.num_samples("train"),
                                   updates_per_epoch=-(-steps // recipe.train.accum_steps))
    # a semantic loss on a flat dataset fails here, not on every worker
    build_loss(recipe.train.loss, manifest, label_smoothing=recipe.train.label_smoothing)
    backbone, parent_model_id = None, None
    if isinstance(recipe, FinetuneRecipe) and recipe.backbone:
        version = resolve(recipe.backbone, settings=settings)
        backbone = f"{version.name}/{version.version}"  # pin: an alias may move mid-run
        parent_model_id = getattr(version, "model_id", None)

    task = task_spec(recipe, manifest, backbone=backbone, settings=settings)
    check_model_kwargs(task)

    tracking.ensure_experiment(recipe.experiment, settings=settings)
    if resume:
        run_id = _reopen(resume, recipe, manifest, settings)
    else:
        run_id = tracking.start_run(
            experiment=recipe.experiment, run_name=recipe.name, settings=settings,
            tags={"hypernym.kind": recipe.kind,
                  "hypernym.dataset_fingerprint": manifest.fingerprint,
                  "hypernym.backbone": backbone or "", "mlflow.source.git.commit": _git_commit(),
                  "hypernym.budget": budget or "", **(tags or {})},
        )
    logger = tracking.RunLogger(run_id, tracking_uri=settings.tracking_uri)
    status = "FAILED"
    try:
        if not resume:  # params are immutable in MLflow: a resumed run keeps the first ones
            logger.set_tags({STORAGE_TAG: run_dir(settings.storage, recipe.name, run_id)})
            logger.log_params(recipe.model_dump(mode="json"))
            logger.log_dict(recipe.model_dump(mode="json"), "recipe.json")
            tracking.log_lineage(run_id, dataset_name=manifest.name,
                                 fingerprint=manifest.fingerprint, uri=recipe.data.path,
                                 parent_model_id=parent_model_id, settings=settings)
        result = _fit(recipe, task, run_id, settings, total_steps=steps * recipe.train.epochs,
                      show_progress=show_progress, callbacks=callbacks)
        metrics = dict(result.return_value or result.metrics or {})
        checkpoint_path = (checkpoint_uri(result.checkpoint, settings.storage)
                           if result.checkpoint else None)
        registered = None
        if recipe.registry.name and result.checkpoint is not None:
            with result.checkpoint.as_directory() as ckpt_dir:
                registered = register_checkpoint(recipe, ckpt_dir, run_id, metrics=metrics,
                                                 settings=settings, manifest=manifest,
                                                 checkpoint_name=checkpoint_path)
        status = "FINISHED"
        return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=checkpoint_path,
                           registered=registered, wall_s=time.perf_counter() - started,
                           checkpoint=result.checkpoint)
    except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler ends with sys.exit
        status = "KILLED"
        raise
    except Exception as exc:  # one line: what failed, and the command that resumes the run
        raise failed_run(exc, recipe, run_id, settings) from exc
    finally:
        logger.finish(status)


def _reopen(run_id: str, recipe, manifest: Manifest, settings: Settings) -> str:
    """Check that ``run_id`` is a run of this recipe on this dataset, and mark it running."""
    run = tracking.run_summary(run_id, settings=settings)
    tags = run.tags
    if run.name != recipe.name or tags.get("hypernym.kind") != recipe.kind:
        raise HypernymError(f"run {run_id} is {tags.get('hypernym.kind')} {run.name!r},"
                            f" not {recipe.kind} {recipe.name!r}: resume it with its own recipe")
    if tags.get("hypernym.dataset_fingerprint") != manifest.fingerprint:
        raise HypernymError(f"run {run_id} trained on another dataset (fingerprint "
                            f"{tags.get('hypernym.dataset_fingerprint', '?')[:12]}, now "
                            f"{manifest.fingerprint[:12]}): resume on the same dataset")
    if run.status == "FINISHED":
        raise HypernymError(f"run {run_id} already finished: start a new run instead")
    check_resume(run_id, run_dir(settings.storage, recipe.name, run_id), settings)
    tracking.mark_running(run_id, settings=settings)
    tracking.note_resume(run_id, settings=settings)  # its time marks the gap in the history
    return run_id


def _fit(recipe, task, run_id, settings, *, total_steps: int, show_progress: bool,
         callbacks: list | None = None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from hypernym.runtime import ensure_ray
    from hypernym.train.loop import LoopJob, train_loop_per_worker

    ensure_ray(settings=settings)
    scaling = recipe.scaling
    storage_path, storage_filesystem = ray_storage(settings.storage)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": LoopJob(
            recipe=recipe, task=task, run_id=run_id, tracking_uri=settings.tracking_uri,
            sample_trace=os.environ.get("HYPERNYM_SAMPLE_TRACE"))},
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            # Named by the MLflow run: rerunning a recipe starts fresh, resuming names the run.
            name=run_name(recipe.name, run_id),
            storage_path=storage_path, storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=recipe.train.keep_checkpoints),
            callbacks=callbacks,
        ),
    )
    with _watch(run_id, settings, total_steps=total_steps, label=recipe.kind,
                enabled=show_progress), tracking.heartbeat(run_id,
                                                           tracking_uri=settings.tracking_uri):
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


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
        info = " ".join(f"{k.split('/')[-1]} {m[k]:.3f}" for k in ("train/loss", "val/top1")
                        if k in m)
        desc = f"{label}: epoch {int(m.get('epoch', 0))}" if m else label
        return ProgressState(int(m.get("progress/step", 0)), desc, info)

    return bar.polled(poll, interval_s=1.0)
