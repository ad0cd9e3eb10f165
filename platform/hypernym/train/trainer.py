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
from hypernym.progress import ProgressBar, ProgressState
from hypernym.settings import Settings, get_settings
from hypernym.train.build import TaskSpec
from hypernym.train.losses import build_loss

__all__ = ["TrainResult", "run_training"]


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    registered: Any = None  # hypernym.registry.models.RegisteredModel
    wall_s: float = 0.0


def run_training(
    recipe: PretrainRecipe | FinetuneRecipe,
    *,
    show_progress: bool = True,
    settings: Settings | None = None,
    resume: str | None = None,
) -> TrainResult:
    """Train ``recipe`` on Ray Train and register the result if ``recipe.registry.name`` is set.

    Args:
        resume: an MLflow run id of an earlier run of this recipe: continue it from its latest
            checkpoint, logging into the same run. The number of workers may differ (the
            reader then schedules the rest of the interrupted epoch over the new workers);
            the model and the dataset may not.

    Raises:
        HypernymError: before any Ray work, for a missing dataset, a dataset too small for the
            batch, or a backbone reference that does not resolve.
    """
    from hypernym.registry.models import resolve

    settings = settings or get_settings()
    started = time.perf_counter()
    manifest = read_manifest(recipe.data.path)
    world, batch = recipe.scaling.num_workers, recipe.data.batch_size
    steps = steps_per_epoch(manifest, "train", world_size=world, batch_size=batch)
    if steps == 0:
        raise HypernymError(
            f"{recipe.data.path} has {manifest.num_samples('train')} training samples, fewer than "
            f"one step of {world} workers x batch {batch}: lower data.batch_size or "
            "scaling.num_workers"
        )
    # a semantic loss on a flat dataset fails here, not on every worker
    build_loss(recipe.train.loss, manifest, label_smoothing=recipe.train.label_smoothing)
    backbone, parent_model_id = None, None
    if isinstance(recipe, FinetuneRecipe) and recipe.backbone:
        version = resolve(recipe.backbone, settings=settings)
        backbone = f"{version.name}/{version.version}"  # pin: an alias may move mid-run
        parent_model_id = getattr(version, "model_id", None)

    tracking.ensure_experiment(recipe.experiment, settings=settings)
    if resume:
        run_id = _reopen(resume, recipe, manifest, settings)
    else:
        run_id = tracking.start_run(
            experiment=recipe.experiment, run_name=recipe.name, settings=settings,
            tags={"hypernym.kind": recipe.kind,
                  "hypernym.dataset_fingerprint": manifest.fingerprint,
                  "hypernym.backbone": backbone or "", "mlflow.source.git.commit": _git_commit()},
        )
    logger = tracking.RunLogger(run_id, tracking_uri=settings.tracking_uri)
    status = "FAILED"
    try:
        if not resume:  # params are immutable in MLflow: a resumed run keeps the first ones
            logger.log_params(recipe.model_dump(mode="json"))
            logger.log_dict(recipe.model_dump(mode="json"), "recipe.json")
            tracking.log_lineage(run_id, dataset_name=manifest.name,
                                 fingerprint=manifest.fingerprint, uri=recipe.data.path,
                                 parent_model_id=parent_model_id, settings=settings)
        task = TaskSpec(
            arch=recipe.model.arch, num_classes=len(manifest.classes), backbone_ref=backbone,
            mode=getattr(recipe, "mode", "full"), drop_rate=recipe.model.drop_rate,
            model_kwargs=recipe.model.kwargs, settings=settings,
        )
        result = _fit(recipe, task, run_id, settings, total_steps=steps * recipe.train.epochs,
                      show_progress=show_progress)
        metrics = dict(result.return_value or result.metrics or {})
        checkpoint_path = result.checkpoint.path if result.checkpoint else None
        registered = None
        if recipe.registry.name and result.checkpoint is not None:
            registered = _register(recipe, manifest, task, result.checkpoint, run_id, metrics,
                                   parent=backbone, settings=settings)
        status = "FINISHED"
        return TrainResult(run_id=run_id, metrics=metrics, checkpoint_path=checkpoint_path,
                           registered=registered, wall_s=time.perf_counter() - started)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
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
    tracking.mark_running(run_id, settings=settings)
    return run_id


def _fit(recipe, task, run_id, settings, *, total_steps: int, show_progress: bool):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from hypernym.runtime import ensure_ray
    from hypernym.train.loop import LoopJob, train_loop_per_worker

    ensure_ray(settings=settings)
    scaling = recipe.scaling
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
            name=f"{recipe.name}-{run_id[:12]}",
            storage_path=str(settings.runs_dir),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=recipe.train.keep_checkpoints),
        ),
    )
    with _watch(run_id, settings, total_steps=total_steps, label=recipe.kind,
                enabled=show_progress):
        result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


def _register(recipe, manifest: Manifest, task: TaskSpec, checkpoint, run_id, metrics, *, parent,
              settings):
    import timm

    import hypernym
    from hypernym.registry.card import ModelCard
    from hypernym.registry.models import register_model
    from hypernym.train.checkpoint import load_state

    model = timm.create_model(task.arch, pretrained=False, num_classes=task.num_classes,
                              **(task.model_kwargs or {}))
    weights = recipe.registry.resolved_weights(recipe.train.ema_decay is not None)
    with checkpoint.as_directory() as ckpt_dir:
        state = load_state(ckpt_dir)
    selected = {"select": "last", "epoch": state["position"]["epoch"]}
    if recipe.registry.select == "best":
        best = state["best"]  # the last checkpoint carries the best epoch's weights
        model.load_state_dict(best["weights"])
        selected.update(select="best", epoch=best["epoch"], metric=best["metric"],
                        value=best["value"])
    else:
        model.load_state_dict(state[weights])
    size = recipe.data.img_size
    hierarchy = manifest.hierarchy or {}
    card = ModelCard(
        arch=task.arch, num_classes=task.num_classes,
        classes=[{"id": c.id, "name": c.name} for c in manifest.classes],
        hierarchy={"kind": hierarchy.get("kind", "flat"),
                   "class_paths": hierarchy.get("class_paths", {})},
        loss=recipe.train.loss, weights=weights, selected=selected,
        input_size=[3, size, size], mean=list(recipe.data.mean),
        std=list(recipe.data.std), task=recipe.kind,
        dataset={"name": manifest.name, "fingerprint": manifest.fingerprint,
                 "uri": recipe.data.path},
        run_id=run_id, parent=parent,
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        hypernym_version=hypernym.__version__,
    )
    return register_model(run_id=run_id, name=recipe.registry.name, model=model, card=card,
                          alias=recipe.registry.alias, settings=settings)


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
