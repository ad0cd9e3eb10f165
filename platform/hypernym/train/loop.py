"""The per-worker training loop, shared by pretraining and fine-tuning.

Runs inside each Ray Train worker. It reads like the algorithm: build, restore, then per epoch
train, evaluate, checkpoint and report. Only rank 0 logs to MLflow; every rank reports to Ray Train
the same number of times (report is a barrier).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.utils import ModelEmaV3

from hypernym.config import FinetuneRecipe, PretrainRecipe
from hypernym.data.manifest import read_manifest
from hypernym.data.reader import make_loader, steps_per_epoch
from hypernym.data.schedule import EpochProgress, batch_mixing
from hypernym.errors import HypernymError
from hypernym.train.checkpoint import TrainState, load_state, save_state, unwrap
from hypernym.train.losses import CrossEntropy, SemanticSoftmax
from hypernym.train.parallel import is_sharded, wrap_model
from hypernym.train.step import StepKit, evaluate, train_epoch
from hypernym.train.tasks import (
    TaskSpec,
    build_model,
    build_optimizer,
    build_scheduler,
    normalizer,
)

__all__ = ["LoopJob", "train_loop_per_worker"]


@dataclass(frozen=True)
class LoopJob:
    """What the driver sends to every worker (picklable)."""

    recipe: PretrainRecipe | FinetuneRecipe
    task: TaskSpec
    run_id: str | None
    tracking_uri: str | None
    sample_trace: str | None = None  # HYPERNYM_SAMPLE_TRACE of the driver (see _SampleTrace)


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
    # The average starts from the initial weights and lives on the training device.
    ema = ModelEmaV3(model, decay=train.ema_decay) if train.ema_decay else None
    model = wrap_model(model, strategy=job.recipe.scaling.strategy, compile_model=train.compile)
    optimizer = build_optimizer(unwrap(model), job.recipe.optim)  # after sharding (FSDP2)
    scheduler = build_scheduler(optimizer, job.recipe.optim, epochs=train.epochs,
                                steps=math.ceil(steps / train.accum_steps))
    progress = EpochProgress([s.samples for s in manifest.splits["train"]])
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, progress=progress,
                       ema=ema)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        # Each rank reads its own copy (Ray issue 48726: shared downloads can race).
        with checkpoint.as_directory() as ckpt_dir:
            state.load_state_dict(load_state(ckpt_dir))

    logger, node_logger = _loggers(job, ctx)
    kit = _step_kit(job, manifest, device)
    trace = _SampleTrace.open(job.sample_trace, rank, state.global_step)
    metrics: dict[str, float] = {}
    done = False
    try:
        for epoch in range(state.epoch, train.epochs):
            progress.start(epoch)  # a checkpoint taken mid-epoch keeps what that epoch consumed
            loader = make_loader(
                manifest, data.path, "train", rank=rank, world_size=world, epoch=epoch,
                batch_size=data.batch_size, img_size=data.img_size, train=True,
                seed=data.seed, num_workers=data.loader_workers, crop_scale=data.crop_scale,
                rand_augment=data.rand_augment, progress=progress,
                recycle=True,  # train_epoch normalises (copies) each batch before taking the next
                decode_on=data.decode_on,
            )
            consumed = _Consumed(state, job, rank, world, trace, device)
            metrics = train_epoch(state, loader, kit, logger=logger, world=world, epoch=epoch,
                                  steps=loader.steps, after_step=consumed.after_step)
            metrics.update(consumed.epoch_metrics())
            metrics.update(_validate(state, job, manifest, kit, rank, world))
            metrics["epoch"] = epoch + 1
            metrics["progress/step"] = state.global_step
            state.epoch = epoch + 1
            progress.start(state.epoch)
            if scheduler is not None:
                scheduler.step(state.epoch)
            if logger is not None:
                logger.log_metrics(metrics, step=state.global_step)
            _report(state, job, metrics, rank)
        done = True
    finally:
        for each in {logger, node_logger} - {None}:  # rank 0's may be both
            each.finish_worker(timeout_s=120.0 if done else 10.0)  # a failing rank: briefly
    return metrics


def _step_kit(job: LoopJob, manifest, device: torch.device) -> StepKit:
    data, train = job.recipe.data, job.recipe.train
    try:  # per-level accuracy whenever the classes form a hierarchy
        semantic = SemanticSoftmax.from_manifest(
            manifest, label_smoothing=train.label_smoothing).to(device)
    except HypernymError:
        semantic = None
    loss_fn = semantic if train.loss == "semantic" else CrossEntropy(train.label_smoothing)
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
                   mixup=mixup, semantic=semantic, device=device, img_size=data.img_size)


def _validate(state: TrainState, job: LoopJob, manifest, kit: StepKit, rank: int,
              world: int) -> dict[str, float]:
    """Validation metrics of the model, and of its EMA when there is one."""
    data = job.recipe.data
    if manifest.num_samples("val") == 0:
        return {}
    nets = {"val": state.model if is_sharded(state.model) else unwrap(state.model)}
    if state.ema is not None:
        nets["val_ema"] = state.ema.module
    loader = make_loader(
        manifest, data.path, "val", rank=rank, world_size=world, epoch=0,
        batch_size=data.batch_size, img_size=data.img_size, train=False,
        seed=data.seed, num_workers=data.loader_workers, decode_on=data.decode_on,
    )
    return evaluate(nets, loader, kit, world=world, lockstep=is_sharded(state.model))


class _Consumed:
    """Marks what each optimizer step trained on, for exactly-once resumption, and takes the
    mid-epoch checkpoints (every ``train.checkpoint_every`` steps)."""

    def __init__(self, state: TrainState, job: LoopJob, rank: int, world: int, trace,
                 device: torch.device) -> None:
        self.state, self.job, self.rank, self.world, self.trace = state, job, rank, world, trace
        self.device = device
        self.pending: list[torch.Tensor] = []  # ids trained on since the last sync
        self.skipped = 0
        # Batch mixing: distinct classes per batch, and the label histogram they came from.
        self.classes = torch.zeros(job.task.num_classes, dtype=torch.float64)
        self.distinct, self.batches = 0.0, 0

    def after_step(self, batches: list) -> None:
        """After an optimizer step, with the batches (one per accumulation step) it used."""
        for batch in batches:
            self.pending.append(batch.id)
            self.skipped += int(batch.skipped.sum())
            labels = batch.label
            self.classes += torch.bincount(labels, minlength=len(self.classes)).double()
            self.distinct += len(torch.unique(labels))
            self.batches += 1
            if self.trace is not None:
                self.trace.write(self.state.progress.epoch, self.state.global_step, batch.id)
        every = self.job.recipe.train.checkpoint_every
        if every and self.state.global_step % every == 0:
            self.sync()
            _report(self.state, self.job, {"progress/step": self.state.global_step}, self.rank,
                    name=f"step-{self.state.global_step:08d}")

    def sync(self) -> None:
        """Merge every rank's trained ids into the (replicated) epoch progress."""
        mine = torch.cat(self.pending) if self.pending else torch.zeros(0, dtype=torch.int64)
        self.pending.clear()
        gathered = [mine]
        if self.world > 1 and dist.is_initialized():
            gathered = [None] * self.world
            dist.all_gather_object(gathered, mine)
        for ids in gathered:
            self.state.progress.mark(ids.numpy())

    def epoch_metrics(self) -> dict[str, float]:
        """Bad samples skipped, and how mixed the batches were (``schedule.batch_mixing``),
        over all ranks."""
        sums = torch.cat([torch.tensor([self.skipped, self.distinct, self.batches],
                                       dtype=torch.float64), self.classes])
        sums = sums.to(self.device)  # NCCL: on the device
        if self.world > 1 and dist.is_initialized():
            dist.all_reduce(sums)
        skipped, distinct, batches, *counts = sums.cpu().tolist()
        return {"data/skipped_samples": skipped,
                "data/batch_mixing": batch_mixing(distinct / max(batches, 1), counts,
                                                  self.job.recipe.data.batch_size)}


class _SampleTrace:
    """With HYPERNYM_SAMPLE_TRACE=DIR set for the driver, every rank appends ``epoch step id id
    ...`` per optimizer step to its own file there, named by the step it started from: an audit
    of the data order (which samples went into which step, across restarts). Off by default."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("a", buffering=1)

    @classmethod
    def open(cls, folder: str | None, rank: int, start_step: int) -> _SampleTrace | None:
        if not folder:
            return None
        Path(folder).mkdir(parents=True, exist_ok=True)
        return cls(Path(folder) / f"from-{start_step:08d}-rank{rank}-pid{os.getpid()}.txt")

    def write(self, epoch: int, step: int, ids: torch.Tensor) -> None:
        self.fh.write(f"{epoch} {step} {' '.join(map(str, ids.tolist()))}\n")


def _report(state: TrainState, job: LoopJob, metrics: dict[str, float], rank: int, *,
            name: str | None = None) -> None:
    # DDP replicas are identical: rank 0's copy is the checkpoint. A sharded model's state is
    # gathered by all ranks together, into rank 0.
    payload = state.state_dict() if rank == 0 or is_sharded(state.model) else None
    if name is None and job.recipe.registry.select == "best":  # an epoch end, validated
        _track_best(state, job, metrics, payload if rank == 0 else None)
        if payload is not None:
            payload["best"] = state.best
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_state(tmp, payload, job.recipe.model_dump(mode="json"))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint,
                         checkpoint_dir_name=name or f"epoch-{state.epoch:04d}")


def _track_best(state: TrainState, job: LoopJob, metrics: dict[str, float], payload) -> None:
    """Keep the epoch's weights if its ``registry.metric`` beats the best so far. Every rank
    sees the same (all-reduced) metric, so every rank agrees; rank 0 keeps the weights."""
    registry, ema = job.recipe.registry, job.recipe.train.ema_decay is not None
    metric = registry.resolved_metric(ema)
    if metric not in metrics:
        raise HypernymError(
            f"registry.metric {metric!r} is not among this run's epoch metrics "
            f"{sorted(k for k in metrics if k.startswith('val'))}: pick one of those")
    value = float(metrics[metric])
    best = state.best
    if best is not None and not (value > best["value"] if registry.mode == "max"
                                 else value < best["value"]):
        return
    weights = None
    if payload is not None:
        weights = {k: v.detach().to("cpu", copy=True)
                   for k, v in payload[registry.resolved_weights(ema)].items()}
    state.best = {"metric": metric, "value": value, "epoch": state.epoch, "weights": weights}


def _loggers(job: LoopJob, ctx):
    """Rank 0's logger for the run's metrics, and, on the first rank of every node, one that
    samples that node's system metrics (``system/node_<node rank>/*`` when there are several)."""
    if job.run_id is None:
        return None, None
    from hypernym.registry.tracking import RunLogger

    logger = RunLogger(job.run_id, tracking_uri=job.tracking_uri) if ctx.get_world_rank() == 0 \
        else None
    node_logger = None
    if job.recipe.train.system_metrics_s and ctx.get_local_rank() == 0:
        node_logger = logger or RunLogger(job.run_id, tracking_uri=job.tracking_uri)
        several = ctx.get_world_size() > ctx.get_local_world_size()
        node_logger.start_system_metrics(
            interval_s=job.recipe.train.system_metrics_s,
            node_id=f"node_{ctx.get_node_rank()}" if several else None)
    return logger, node_logger


def _autocast(amp: str, device: torch.device):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    # bf16 needs no loss scaling, which keeps the loop and its checkpoint state simple.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
