"""One training epoch (`train_epoch`) and one evaluation pass (`evaluate`).

The step: uint8 batch -> normalised float on the device -> timm Mixup/CutMix (optional) ->
forward under autocast -> loss / accumulation -> backward (gradient sync only on the last batch
of an accumulation group) -> clip -> optimizer step -> per-step LR -> EMA update. Nothing here
forces the host to wait for the device except the metric logs every ``train.log_every`` steps:
the running loss stays a device tensor. After each optimizer step the epoch records what the step
trained on (each of ``records``) and, every ``checkpoint_every`` steps, takes the mid-epoch
checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from hypernym.config import TrainSpec
from hypernym.train.checkpoint import unwrap
from hypernym.train.distributed import all_reduce_sum, any_rank
from hypernym.train.finetune import train_mode
from hypernym.train.losses import CrossEntropy, SemanticSoftmax

__all__ = ["StepKit", "StepRecord", "evaluate", "train_epoch"]


@dataclass
class StepKit:
    """What a step needs besides the training state.

    Attributes:
        normalize: uint8 NCHW -> normalised float on the training device.
        autocast: the mixed-precision context (bf16 on GPU) or a null context.
        train: the recipe's ``train`` section.
        loss_fn: CrossEntropy or SemanticSoftmax (`hypernym.train.losses.build_loss`).
        mixup: a ``timm.data.Mixup`` (it also builds the soft targets), or None.
        semantic: per-level accuracy for evaluation when the dataset has a hierarchy, or None.
        device: the training device (collectives run on it: NCCL takes no CPU tensors).
        img_size: the input size (for the stand-in batches of a lockstep evaluation).
    """

    normalize: Callable[[torch.Tensor], torch.Tensor]
    autocast: Any
    train: TrainSpec
    loss_fn: CrossEntropy | SemanticSoftmax
    device: torch.device = torch.device("cpu")
    img_size: int = 224
    mixup: Any = None
    semantic: SemanticSoftmax | None = None


class StepRecord(Protocol):
    """Something that records what each optimizer step trained on (consumed sample ids, batch
    statistics, the sample trace)."""

    def add(self, epoch: int, step: int, batches: list) -> None:
        """The batches (one per accumulation step) optimizer step ``step`` trained on."""


def _no_sync(model: torch.nn.Module, skip: bool):
    """Skip the gradient all-reduce on the batches of an accumulation group but the last."""
    if not skip:
        return nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _FsdpNoSync(model)
    return nullcontext()  # one worker: nothing to sync


class _FsdpNoSync:
    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        self.model.set_requires_gradient_sync(False)

    def __exit__(self, *exc) -> None:
        self.model.set_requires_gradient_sync(True)


def train_epoch(state, loader, kit: StepKit, *, logger, world: int, epoch: int, steps: int,
                records: Sequence[StepRecord] = (),
                checkpoint: Callable[[], None] | None = None) -> dict[str, float]:
    """One pass over ``loader``, which yields ``steps`` batches.

    ``train.accum_steps`` batches make one optimizer step (the epoch's last group may be
    shorter). After each optimizer step every one of ``records`` gets the batches it trained
    on, and every ``train.checkpoint_every`` steps ``checkpoint()`` takes the mid-epoch
    checkpoint. Rank 0's ``logger`` gets loss, LR, throughput and the fraction of time spent
    waiting for data every ``train.log_every`` optimizer steps.
    """
    model, optimizer, scheduler, train = state.model, state.optimizer, state.scheduler, kit.train
    train_mode(model)  # a probe's frozen backbone (and a warm-up's held layers) stay in eval
    accum = train.accum_steps
    loss_sum, seen, group = None, 0, []
    window = _Window()
    start = tick = time.perf_counter()
    data_wait = 0.0
    for index, batch in enumerate(loader):
        waited = time.perf_counter() - tick
        data_wait += waited
        window.wait += waited
        group_start = index - len(group)
        group_size = min(accum, steps - group_start) if steps else accum
        group.append(batch)
        last_of_group = len(group) >= group_size
        images = kit.normalize(batch[0])
        if train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch[1].to(images.device, non_blocking=True)
        target = labels
        if kit.mixup is not None:
            images, target = kit.mixup(images, labels)
        with _no_sync(model, skip=not last_of_group):
            with kit.autocast:
                loss = kit.loss_fn(model(images), target)
            (loss / group_size).backward()
        detached = loss.detach() * len(labels)
        loss_sum = detached if loss_sum is None else loss_sum + detached
        seen += len(labels)
        window.images += len(labels)
        if last_of_group:
            if train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            if scheduler is not None:
                scheduler.step_update(num_updates=state.global_step)
            if state.ema is not None:
                state.ema.update(unwrap(model), step=state.global_step)
            for record in records:
                record.add(epoch, state.global_step, group)
            if checkpoint is not None and train.checkpoint_every \
                    and state.global_step % train.checkpoint_every == 0:
                checkpoint()  # the mid-epoch checkpoint
            group = []
            if logger is not None and state.global_step % train.log_every == 0:
                logger.log_metrics({
                    "train/loss_step": loss.item(), "train/lr": optimizer.param_groups[0]["lr"],
                    **window.rates(world), "progress/step": state.global_step,
                    "progress/epoch_float": epoch + (index + 1) / max(steps, 1),
                }, step=state.global_step)
                window = _Window()
        tick = time.perf_counter()
    elapsed = max(time.perf_counter() - start, 1e-9)
    return {
        "train/loss": (loss_sum.item() if loss_sum is not None else 0.0) / max(seen, 1),
        "train/images_per_s": seen * world / elapsed,
        "train/data_wait_frac": data_wait / elapsed,
        "train/lr": optimizer.param_groups[0]["lr"],
    }


class _Window:
    """Throughput and data wait since the last metric log (the epoch figures hide stalls)."""

    def __init__(self) -> None:
        self.start, self.images, self.wait = time.perf_counter(), 0, 0.0

    def rates(self, world: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"train/images_per_s_window": self.images * world / elapsed,
                "train/data_wait_frac_window": self.wait / elapsed}


@torch.no_grad()
def evaluate(nets: dict[str, torch.nn.Module], loader, kit: StepKit, *,
             lockstep: bool = False) -> dict[str, float]:
    """Loss, top-1, top-5 and (with a hierarchy) semantic accuracy of each net (by metric
    prefix, e.g. ``{"val": model, "val_ema": ema}``) over one pass of a validation loader:
    the batches are decoded once for all of them.

    The nets are unwrapped models: ranks may hold different numbers of validation batches, so
    DDP's forward (a collective) is not used. A sharded (FSDP) model's forward is a collective
    too: with ``lockstep`` every rank runs as many forwards as the busiest one, on an empty
    stand-in batch once its own batches are done.
    """
    levels = len(kit.semantic.members) if kit.semantic is not None else 0
    # per net: loss sum, top-1, top-5, count, then (right, with target) per level
    totals = {name: torch.zeros(4 + 2 * levels, dtype=torch.float64, device=kit.device)
              for name in nets}
    for net in nets.values():
        net.eval()
    batches = iter(loader)
    while True:
        batch = next(batches, None)
        if lockstep and not any_rank(batch is not None, kit.device):
            break
        if batch is None:
            if not lockstep:
                break
            stand_in = torch.zeros(1, 3, kit.img_size, kit.img_size, dtype=torch.uint8)
            for net in nets.values():
                net(kit.normalize(stand_in))
            continue
        images, labels = kit.normalize(batch[0]), batch[1]
        labels = labels.to(images.device)
        for name, net in nets.items():
            with kit.autocast:
                logits = net(images).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            row = [kit.loss_fn(logits, labels) * len(labels), (top[:, 0] == labels).sum(),
                   (top == labels[:, None]).any(dim=1).sum(), torch.tensor(len(labels))]
            if kit.semantic is not None:
                row += list(kit.semantic.correct(logits, labels).flatten())
            totals[name] += torch.stack([v.to(kit.device, torch.float64) for v in row])
    out: dict[str, float] = {}
    for name, net in nets.items():
        train_mode(net)
        out.update(_summarise(name, all_reduce_sum(totals[name]).cpu(), kit.semantic))
    return out


def _summarise(prefix: str, totals: torch.Tensor, semantic) -> dict[str, float]:
    count = max(totals[3].item(), 1.0)
    out = {f"{prefix}/loss": totals[0].item() / count, f"{prefix}/top1": totals[1].item() / count,
           f"{prefix}/top5": totals[2].item() / count}
    if semantic is not None:
        per_level = totals[4:].view(-1, 2)
        # The 21K-P "semantic accuracy": right predictions over all level targets.
        out[f"{prefix}/semantic_top1"] = (per_level[:, 0].sum() / per_level[:, 1].sum().clamp(
            min=1)).item()
        for level, (right, valid) in zip(semantic.levels, per_level.tolist(), strict=True):
            out[f"{prefix}/semantic_top1_level{level}"] = right / max(valid, 1)
    return out
