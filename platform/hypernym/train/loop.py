"""The per-worker training loop, shared by pretraining and fine-tuning.

Runs inside each Ray Train worker. It reads like the algorithm: build, restore, then per epoch
train (recording what each step consumed, with mid-epoch checkpoints), evaluate, checkpoint and
report. Only rank 0 logs to MLflow; every rank reports to Ray Train the same number of times
(report is a barrier).
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import ray.util
import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3

from hypernym.config import DataSpec, FinetuneRecipe, PretrainRecipe, TrainSpec
from hypernym.data.manifest import Manifest, read_manifest
from hypernym.data.normalize import normalizer
from hypernym.data.reader import data_loader, steps_per_epoch
from hypernym.data.schedule import EpochProgress
from hypernym.train.build import TaskSpec, build_model, build_optimizer, build_scheduler
from hypernym.train.checkpoint import TrainState, unwrap
from hypernym.train.distributed import is_sharded, wrap_model
from hypernym.train.epoch import StepKit, evaluate, train_epoch
from hypernym.train.losses import build_loss, level_accuracy
from hypernym.train.metrics import BatchStats
from hypernym.train.records import ConsumedSamples, SampleTrace
from hypernym.train.report import Reporter
from hypernym.train.restore import restore_newest_whole
from hypernym.train.schedulers import step_epoch

__all__ = ["LoopJob", "train_loop_per_worker"]


@dataclass(frozen=True)
class LoopJob:
    """What the driver sends to every worker (picklable)."""

    recipe: PretrainRecipe | FinetuneRecipe
    task: TaskSpec
    run_id: str | None
    tracking_uri: str | None
    sample_trace: str | None = None  # HYPERNYM_SAMPLE_TRACE of the driver (see SampleTrace)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    job: LoopJob = config["job"]
    data, train = job.recipe.data, job.recipe.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(data.seed + rank)
    np.random.seed(data.seed + rank)  # timm's Mixup draws from numpy
    random.seed(data.seed + rank)  # the crops, when the loader has no worker processes

    manifest = read_manifest(data.path)
    steps = steps_per_epoch(manifest, "train", world_size=world, batch_size=data.batch_size)
    model = build_model(job.task).to(device)
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The average starts from the initial weights and lives on the training device. timm's
    # warm-up (decay 1 - (1 + step)^-2/3, capped at ema_decay) lets it follow the weights
    # early on: without it a short fine-tune's EMA stays near the initial weights.
    ema = ModelEmaV3(model, decay=train.ema_decay, use_warmup=True) if train.ema_decay else None
    model = wrap_model(model, strategy=job.recipe.scaling.strategy, compile_model=train.compile)
    optimizer = build_optimizer(unwrap(model), job.recipe.optim)  # after sharding (FSDP2)
    scheduler = build_scheduler(optimizer, job.recipe.optim, epochs=train.epochs,
                                steps=math.ceil(steps / train.accum_steps))
    progress = EpochProgress([s.samples for s in manifest.splits["train"]])
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, progress=progress,
                       ema=ema)

    # The newest whole checkpoint: Ray's latest, or the one before a damaged one (restore.py).
    restored = restore_newest_whole(ray.train.get_checkpoint())
    if restored is not None:
        state.load_state_dict(restored.state)
    plan = unwrap(model).hypernym_finetune  # the mode's frozen and held layers

    logger, node_logger = _loggers(job.run_id, job.tracking_uri, train, ctx)
    group = ray.util.get_current_placement_group()
    if logger is not None and group is not None:
        # Which reservation this worker group holds: a sweep releases it when Tune stops the
        # trial (Ray Train's own cleaner needs the state API, absent without a dashboard).
        logger.set_tags({"hypernym.placement_group": group.id.hex()})
    if logger is not None and restored is not None and restored.skipped:
        logger.set_tags(restored.tags())  # which checkpoints were skipped, and why
    kit = _step_kit(data, train, manifest, device)
    reporter = Reporter(rank=rank, recipe=job.recipe.model_dump(mode="json"),
                        registry=job.recipe.registry, ema=train.ema_decay is not None,
                        name_suffix=restored.name_suffix if restored else "")
    trace = SampleTrace.open(job.sample_trace, rank, state.global_step)
    metrics: dict[str, float] = {}
    done = False
    try:
        if state.global_step == 0 and plan.head_init_rows:
            # A head started from the pretrained rows classifies before any step: epoch 0.
            start = _validate(state, data, manifest, kit, rank, world)
            if logger is not None:
                logger.log_metrics({**start, "epoch": 0, "finetune/head_init_rows":
                                    plan.head_init_rows}, step=0)
        for epoch in range(state.epoch, train.epochs):
            plan.enter_epoch(epoch, optimizer, scheduler, global_step=state.global_step,
                             base_lr=job.recipe.optim.lr)
            progress.start(epoch)  # a checkpoint taken mid-epoch keeps what that epoch consumed
            loader = data_loader(data, manifest, "train", rank=rank, world_size=world,
                                 epoch=epoch, progress=progress)
            consumed = ConsumedSamples(progress)  # exactly once: what each step trained on
            stats = BatchStats(job.task.num_classes, batch_size=data.batch_size)

            def mid_epoch_checkpoint(consumed=consumed) -> None:
                consumed.sync()  # every rank's trained ids into the saved epoch progress
                reporter.mid_epoch(state)

            metrics = train_epoch(state, loader, kit, logger=logger, world=world, epoch=epoch,
                                  steps=loader.steps,
                                  records=[r for r in (consumed, stats, trace) if r is not None],
                                  checkpoint=mid_epoch_checkpoint)
            metrics.update(stats.epoch_metrics(device))
            metrics.update(_validate(state, data, manifest, kit, rank, world))
            metrics["epoch"] = epoch + 1
            metrics["progress/step"] = state.global_step
            state.epoch = epoch + 1
            progress.start(state.epoch)
            step_epoch(scheduler, state.epoch, metrics, job.recipe.optim)  # plateau: per epoch
            if logger is not None:
                logger.log_metrics(metrics, step=state.global_step)
            reporter.epoch_end(state, metrics)
        done = True
    finally:
        for each in {logger, node_logger} - {None}:  # rank 0's may be both
            each.finish_worker(timeout_s=120.0 if done else 10.0)  # a failing rank: briefly
    return metrics


def _step_kit(data: DataSpec, train: TrainSpec, manifest: Manifest,
              device: torch.device) -> StepKit:
    loss_fn = build_loss(train.loss, manifest, label_smoothing=train.label_smoothing).to(device)
    mixup = None
    if train.mixup_alpha > 0 or train.cutmix_alpha > 0:
        mixup = Mixup(
            mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha,
            prob=train.mix_prob, switch_prob=train.mix_switch_prob, mode="batch",
            # The semantic softmax smooths per level itself; timm smooths over all classes.
            label_smoothing=0.0 if train.loss == "semantic" else train.label_smoothing,
            num_classes=len(manifest.classes),
        )
    return StepKit(normalize=normalizer(device, data.mean, data.std, img_size=data.img_size),
                   autocast=_autocast(train.amp, device), train=train, loss_fn=loss_fn,
                   mixup=mixup, semantic=level_accuracy(manifest, loss_fn, device),
                   device=device, img_size=data.img_size)


def _validate(state: TrainState, data: DataSpec, manifest: Manifest, kit: StepKit, rank: int,
              world: int) -> dict[str, float]:
    """Validation metrics of the model, and of its EMA when there is one."""
    if manifest.num_samples("val") == 0:
        return {}
    nets = {"val": state.model if is_sharded(state.model) else unwrap(state.model)}
    if state.ema is not None:
        nets["val_ema"] = state.ema.module
    loader = data_loader(data, manifest, "val", rank=rank, world_size=world)
    return evaluate(nets, loader, kit, lockstep=is_sharded(state.model))


def _loggers(run_id: str | None, tracking_uri: str | None, train: TrainSpec, ctx):
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


def _autocast(amp: str, device: torch.device):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    # bf16 needs no loss scaling, which keeps the loop and its checkpoint state simple.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
