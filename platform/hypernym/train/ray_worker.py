"""Ray Train's worker function: a thin shell around the training core.

It takes rank, world and device from Ray Train, builds the core (`hypernym.train.core.Trainer`)
from the job the driver sent, restores the newest whole checkpoint (`hypernym.train.restore`:
Ray Train's latest, or the one before it when that one is damaged), gives rank 0 the
run's MLflow logger, and reports checkpoints and metrics through Ray (`RayCheckpoints`).
Everything else (what a step, an epoch, a validation pass is) is the core's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import ray.train
import ray.train.torch
import ray.util
import torch

from hypernym.settings import Settings
from hypernym.train.checkpoint import save_state
from hypernym.train.checkpointing import CheckpointHooks
from hypernym.train.core import Trainer
from hypernym.train.records import SampleTrace
from hypernym.train.restore import restore_newest_whole
from hypernym.train.tasks import Task

__all__ = ["RayCheckpoints", "WorkerJob", "train_loop_per_worker"]


@dataclass(frozen=True)
class WorkerJob:
    """What the driver sends to every worker (picklable).

    Attributes:
        recipe: the resolved recipe (the budget rule applied).
        task: the task, built in the driver (`hypernym.train.tasks.build_task`).
        backbone: a fine-tune's concrete registry reference ``NAME/VERSION``, or None.
        settings: the driver's resolved settings (workers have another cwd and environment).
        run_id: the MLflow run rank 0 logs into (None: no logging).
        sample_trace: the driver's HYPERNYM_SAMPLE_TRACE (`hypernym.train.records.SampleTrace`).
    """

    recipe: Any
    task: Task
    backbone: str | None
    settings: Settings
    run_id: str | None
    sample_trace: str | None = None


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    job: WorkerJob = config["job"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    trainer = Trainer.from_recipe(job.recipe, task=job.task, backbone=job.backbone,
                                  settings=job.settings, device=device, rank=rank, world=world)
    # The newest whole checkpoint: Ray's latest, or the one before a damaged one (restore.py).
    restored = restore_newest_whole(ray.train.get_checkpoint())
    if restored is not None:
        trainer.load_state_dict(restored.state)
    train = job.recipe.train
    logger, node_logger = _loggers(job.run_id, job.settings.tracking_uri, train, ctx)
    group = ray.util.get_current_placement_group()
    if logger is not None and group is not None:
        # Which reservation this worker group holds: a sweep releases it when Tune stops the
        # trial (Ray Train's own cleaner needs the state API, absent without a dashboard).
        logger.set_tags({"hypernym.placement_group": group.id.hex()})
    if logger is not None and restored is not None and restored.skipped:
        logger.set_tags(restored.tags())  # which checkpoints were skipped, and why
    trainer.logger = logger
    trainer.hooks = RayCheckpoints(rank=rank, recipe=job.recipe.model_dump(mode="json"),
                                   registry=job.recipe.registry, ema=train.ema_decay is not None,
                                   name_suffix=restored.name_suffix if restored else "")
    trace = SampleTrace.open(job.sample_trace, rank, trainer.state.global_step)
    if trace is not None:
        trainer.records.append(trace)
    done = False
    try:
        metrics = trainer.fit()
        done = True
    finally:
        for each in {logger, node_logger} - {None}:  # rank 0's may be both
            each.finish_worker(timeout_s=120.0 if done else 10.0)  # a failing rank: briefly
    return metrics


class RayCheckpoints(CheckpointHooks):
    """Checkpoints reported to Ray Train. Every rank reports the same number of times
    (``ray.train.report`` is a barrier); rank 0 hands over the checkpoint's directory."""

    def save(self, payload: dict | None, metrics: dict[str, float], *, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                save_state(tmp, payload, self.recipe)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def _loggers(run_id: str | None, tracking_uri: str | None, train, ctx):
    """Rank 0's logger for the run's metrics, and, on the first rank of every node, one that
    samples that node's system metrics (``system/node_<node rank>/*`` when there are several)."""
    if run_id is None:
        return None, None
    from hypernym.tracking import RunLogger

    logger = RunLogger(run_id, tracking_uri=tracking_uri) if ctx.get_world_rank() == 0 else None
    node_logger = None
    if train.system_metrics_s and ctx.get_local_rank() == 0:
        node_logger = logger or RunLogger(run_id, tracking_uri=tracking_uri)
        several = ctx.get_world_size() > ctx.get_local_world_size()
        node_logger.start_system_metrics(
            interval_s=train.system_metrics_s,
            node_id=f"node_{ctx.get_node_rank()}" if several else None)
    return logger, node_logger
