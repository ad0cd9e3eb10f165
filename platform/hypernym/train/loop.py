"""The per-worker training loop, shared by pretraining and fine-tuning.

Runs inside each Ray Train worker. It reads like the algorithm: build, restore, then per epoch
train, evaluate, checkpoint and report. Only rank 0 logs to MLflow; every rank reports to Ray Train
the same number of times (report is a barrier).
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from hypernym.config import FinetuneRecipe, PretrainRecipe
from hypernym.data.manifest import read_manifest
from hypernym.data.reader import make_loader, steps_per_epoch
from hypernym.data.schedule import EpochProgress
from hypernym.train.checkpoint import TrainState, load_state, save_state, unwrap
from hypernym.train.tasks import (
    TaskSpec,
    build_model,
    build_optimizer,
    build_scheduler,
    normalizer,
)

__all__ = ["LoopJob", "train_epoch", "train_loop_per_worker"]


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

    manifest = read_manifest(data.path)
    steps = steps_per_epoch(manifest, "train", world_size=world, batch_size=data.batch_size)
    model = build_model(job.task)
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, job.recipe.optim)
    scheduler = build_scheduler(optimizer, job.recipe.optim, epochs=train.epochs, steps=steps)
    model = ray.train.torch.prepare_model(model)
    progress = EpochProgress([s.samples for s in manifest.splits["train"]])
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, progress=progress)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        # Each rank reads its own copy (Ray issue 48726: shared downloads can race).
        with checkpoint.as_directory() as ckpt_dir:
            state.load_state_dict(load_state(ckpt_dir))

    logger = _rank0_logger(job, rank)
    normalize = normalizer(device)
    autocast = _autocast(train.amp, device)
    trace = _SampleTrace.open(job.sample_trace, rank, state.global_step)
    metrics: dict[str, float] = {}
    for epoch in range(state.epoch, train.epochs):
        progress.start(epoch)  # a checkpoint taken mid-epoch keeps what that epoch consumed
        loader = make_loader(
            manifest, data.path, "train", rank=rank, world_size=world, epoch=epoch,
            batch_size=data.batch_size, img_size=data.img_size, train=True,
            seed=data.seed, num_workers=data.loader_workers, crop_scale=data.crop_scale,
            progress=progress,
        )
        consumed = _Consumed(state, job, rank, world, trace)
        metrics = train_epoch(
            state, loader, normalize, autocast, train, logger=logger, world=world,
            epoch=epoch, steps=loader.steps, after_step=consumed.after_step,
        )
        metrics["data/skipped_samples"] = consumed.skipped_total()
        metrics.update(_evaluate(model, job, manifest, normalize, autocast, rank, world))
        metrics["epoch"] = epoch + 1
        metrics["progress/step"] = state.global_step
        state.epoch = epoch + 1
        progress.start(state.epoch)
        if scheduler is not None:
            scheduler.step(state.epoch)
        if logger is not None:
            logger.log_metrics(metrics, step=state.global_step)
        _report(state, job, metrics, rank)
    if logger is not None:
        logger.flush()
    return metrics


class _Consumed:
    """Marks what each optimizer step trained on, for exactly-once resumption, and takes the
    mid-epoch checkpoints (every ``train.checkpoint_every`` steps)."""

    def __init__(self, state: TrainState, job: LoopJob, rank: int, world: int, trace) -> None:
        self.state, self.job, self.rank, self.world, self.trace = state, job, rank, world, trace
        self.pending: list[torch.Tensor] = []  # ids trained on since the last sync
        self.skipped = 0

    def after_step(self, batch) -> None:
        if not hasattr(batch, "id"):  # plain (images, labels) batches: nothing to record
            return
        self.pending.append(batch.id)
        self.skipped += int(batch.skipped.sum())
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

    def skipped_total(self) -> float:
        total = torch.tensor([float(self.skipped)])
        if self.world > 1 and dist.is_initialized():
            dist.all_reduce(total)
        return total.item()


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


def train_epoch(state, loader, normalize, autocast, train, *, logger, world, epoch, steps,
                after_step=None):
    """One pass over ``loader``: the step itself, plus the bookkeeping a run needs (rank-0
    metric logs every ``train.log_every`` steps, throughput, time waiting for data).
    ``after_step(batch)`` runs after every optimizer step (progress records, checkpoints)."""
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    model.train()
    loss_sum, seen, data_wait = 0.0, 0, 0.0
    start = tick = time.perf_counter()
    for batch_index, batch in enumerate(loader):
        data_wait += time.perf_counter() - tick
        images, labels = batch[0], batch[1]
        images = normalize(images)
        if train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(images.device, non_blocking=True)
        with autocast:
            loss = F.cross_entropy(model(images), labels, label_smoothing=train.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        state.global_step += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=state.global_step)
        if after_step is not None:
            after_step(batch)
        loss_sum += loss.item() * len(labels)
        seen += len(labels)
        if logger is not None and state.global_step % train.log_every == 0:
            logger.log_metrics(
                {"train/loss_step": loss.item(), "train/lr": optimizer.param_groups[0]["lr"],
                 "progress/step": state.global_step,
                 "progress/epoch_float": epoch + (batch_index + 1) / max(steps, 1)},
                step=state.global_step,
            )
        tick = time.perf_counter()
    elapsed = max(time.perf_counter() - start, 1e-9)
    return {
        "train/loss": loss_sum / max(seen, 1),
        "train/images_per_s": seen * world / elapsed,
        "train/data_wait_frac": data_wait / elapsed,
        "train/lr": optimizer.param_groups[0]["lr"],
    }


@torch.no_grad()
def _evaluate(model, job, manifest, normalize, autocast, rank, world) -> dict[str, float]:
    data = job.recipe.data
    if manifest.num_samples("val") == 0:
        return {}
    loader = make_loader(
        manifest, data.path, "val", rank=rank, world_size=world, epoch=0,
        batch_size=data.batch_size, img_size=data.img_size, train=False,
        seed=data.seed, num_workers=data.loader_workers,
    )
    net = unwrap(model)  # no DDP forward in eval: ranks may see different batch counts
    net.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1, top-5, count
    for images, labels, *_ in loader:
        images = normalize(images)
        labels = labels.to(images.device)
        with autocast:
            logits = net(images).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        totals += torch.tensor([
            F.cross_entropy(logits, labels, reduction="sum").item(),
            (top[:, 0] == labels).sum().item(),
            (top == labels[:, None]).any(dim=1).sum().item(),
            len(labels),
        ], dtype=torch.float64)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(totals)
    count = max(totals[3].item(), 1.0)
    return {"val/loss": totals[0].item() / count, "val/top1": totals[1].item() / count,
            "val/top5": totals[2].item() / count}


def _report(state: TrainState, job: LoopJob, metrics: dict[str, float], rank: int, *,
            name: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:  # DDP replicas are identical: one copy is the checkpoint
            save_state(tmp, state, job.recipe.model_dump(mode="json"))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint,
                         checkpoint_dir_name=name or f"epoch-{state.epoch:04d}")


def _rank0_logger(job: LoopJob, rank: int):
    if rank != 0 or job.run_id is None:
        return None
    from hypernym.registry.tracking import RunLogger

    return RunLogger(job.run_id, tracking_uri=job.tracking_uri)


def _autocast(amp: str, device: torch.device):
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    # bf16 needs no loss scaling, which keeps the loop and its checkpoint state simple.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
