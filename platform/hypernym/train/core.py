"""The training core: one worker's training, in a plain process, for any task.

`Trainer` holds the resumable state (model, optimizer, LR schedule, EMA, the reader's position,
RNG), the task, and the loaders, and offers the phases of training as methods:

- `fit`: every remaining epoch (train, validate, checkpoint hooks);
- `train_epoch`: one pass of optimizer steps over the epoch's batches;
- `train_step`: one optimizer step over its K microbatches (``train.accum_steps``);
- `forward_backward`: one microbatch's forward and backward pass;
- `validate`: the validation figures of the model (and of its EMA);
- `state_dict` / `load_state_dict`: everything resumable, under fixed keys.

It runs without Ray: in a notebook, a test, or the demo's few-shot rows. Ray Train's worker
function (`hypernym.train.ray_worker`) is a thin shell around it that takes rank, world and device
from Ray and reports checkpoints and metrics through Ray. Everything objective-specific is the
task's (`hypernym.train.tasks`). Only rank 0 is given a logger.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.utils import ModelEmaV3

from hypernym.data.dataset import Dataset, open_dataset
from hypernym.data.normalize import normalizer
from hypernym.data.schedule import EpochProgress
from hypernym.train.checkpoint import TrainState
from hypernym.train.clock import StepClock
from hypernym.train.distributed import (
    is_sharded,
    no_sync,
    seed_everything,
    unwrap,
    wrap_model,
)
from hypernym.train.finetune import FinetunePlan, train_mode
from hypernym.train.loaders import ShardLoaders
from hypernym.train.metrics import BatchStats
from hypernym.train.model import build_optimizer
from hypernym.train.records import ConsumedSamples
from hypernym.train.schedulers import build_scheduler, step_epoch
from hypernym.train.tasks import Task, build_task
from hypernym.train.validation import validation_pass

__all__ = ["Hooks", "StepResult", "Trainer"]


class Hooks:
    """What the surrounding shell does at the core's checkpoints; the default does nothing.

    Ray Train's shell reports checkpoints and metrics here; a notebook may save to disk.
    """

    def mid_epoch(self, trainer: Trainer) -> None:
        """Every ``train.checkpoint_every`` optimizer steps (the epoch's progress is synced)."""

    def epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After an epoch was trained and validated."""


@dataclass
class StepResult:
    """One optimizer step: its loss (a device tensor, averaged over its samples), the loss's
    named parts, the samples it trained on, and the microbatches (for the step records)."""

    loss: torch.Tensor
    samples: int
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    batches: list = field(default_factory=list)


class Trainer:
    """One worker's training state and its phases. Build it with `from_recipe`.

    Attributes:
        recipe: the resolved pretrain or finetune recipe.
        task: what depends on the objective.
        state: the resumable state (`hypernym.train.checkpoint.TrainState`).
        plan: the fine-tune plan (frozen layers, the head warm-up).
        loaders: where batches come from (`hypernym.train.loaders`).
        logger: rank 0's metric logger (``log_metrics(metrics, step)``), or None.
        records: step records (``add(epoch, step, batches)``) besides the exactly-once one.
        hooks: the shell's checkpoint hooks.
    """

    def __init__(self, *, recipe, task: Task, state: TrainState, plan: FinetunePlan, loaders,
                 device: torch.device, rank: int = 0, world: int = 1, logger=None,
                 hooks: Hooks | None = None) -> None:
        self.recipe, self.task, self.state, self.plan = recipe, task, state, plan
        self.loaders, self.device, self.rank, self.world = loaders, device, rank, world
        self.logger, self.hooks = logger, hooks or Hooks()
        self.records: list = []
        data = recipe.data
        self.normalize = normalizer(device, data.mean, data.std, img_size=data.img_size)
        self.autocast = autocast_for(recipe.train.amp, device)
        self._consumed: ConsumedSamples | None = None

    @classmethod
    def from_recipe(cls, recipe, *, dataset: Dataset | None = None, task: Task | None = None,
                    loaders=None, backbone: str | None = None, settings=None,
                    device: torch.device | str = "cpu", rank: int = 0, world: int = 1,
                    logger=None, hooks: Hooks | None = None) -> Trainer:
        """Build the model, optimizer, schedule and EMA a recipe describes.

        Args:
            recipe: a validated pretrain or finetune recipe (`hypernym.config`).
            dataset: the recipe's dataset, opened (opened here when None).
            task: the task (the recipe's `build_task` when None).
            loaders: where batches come from (the dataset's shards when None).
            backbone: the registry reference a fine-tune starts from (the recipe's
                ``backbone`` when None; the driver passes it pinned, ``NAME/VERSION``).
            rank, world: this worker's place in a process group that already exists.
        """
        device = torch.device(device)
        train = recipe.train
        dataset = dataset or open_dataset(recipe.data.path)
        task = task or build_task(recipe, dataset)
        backbone = backbone or getattr(recipe, "backbone", None)
        loaders = loaders or ShardLoaders(recipe.data, dataset, task.codec(), rank=rank,
                                          world=world)
        seed_everything(recipe.data.seed)  # the same init on every rank (FSDP shards it)
        built = task.build_model(recipe, class_ids=dataset.class_ids, backbone=backbone,
                                 settings=settings)
        model = built.model.to(device)
        if train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        # The average starts from the initial weights and lives on the training device. timm's
        # warm-up (decay 1 - (1 + step)^-2/3, capped at ema_decay) lets it follow the weights
        # early on: without it a short fine-tune's EMA stays near the initial weights.
        ema = ModelEmaV3(model, decay=train.ema_decay, use_warmup=True) if train.ema_decay \
            else None
        model = wrap_model(model, strategy=recipe.scaling.strategy, compile_model=train.compile,
                           device=device)
        seed_everything(recipe.data.seed + rank)  # augmentation, Mixup, dropout: per rank
        optimizer = build_optimizer(unwrap(model), recipe.optim, built.plan)  # after sharding
        scheduler = build_scheduler(optimizer, recipe.optim, epochs=train.epochs,
                                    steps=math.ceil(loaders.steps_per_epoch() / train.accum_steps))
        task.setup(device)
        state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                           progress=EpochProgress(loaders.split_sizes("train")))
        return cls(recipe=recipe, task=task, state=state, plan=built.plan, loaders=loaders,
                   device=device, rank=rank, world=world, logger=logger, hooks=hooks)

    # ------------------------------------------------------------------ the phases

    def fit(self) -> dict[str, float]:
        """Train every epoch not yet trained; the last epoch's metrics."""
        state, metrics = self.state, {}
        if state.global_step == 0 and state.epoch == 0 and self.plan.head_init_rows:
            # A head started from the pretrained rows classifies before any step: epoch 0.
            self._log({**self.validate(), "epoch": 0,
                       "finetune/head_init_rows": self.plan.head_init_rows}, step=0)
        for epoch in range(state.epoch, self.recipe.train.epochs):
            metrics = self.train_epoch(epoch)
            metrics.update(self.validate())
            state.epoch = epoch + 1
            state.progress.start(state.epoch)
            metrics.update({"epoch": state.epoch, "progress/step": state.global_step})
            step_epoch(state.scheduler, state.epoch, metrics, self.recipe.optim)  # plateau
            self._log(metrics, step=state.global_step)
            self.hooks.epoch_end(self, metrics)
        return metrics

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass of optimizer steps over the epoch's remaining batches: after each step
        every record gets its microbatches, every ``train.checkpoint_every`` steps the hooks
        take the mid-epoch checkpoint, every ``train.log_every`` steps rank 0 logs."""
        state, train = self.state, self.recipe.train
        self.plan.enter_epoch(epoch, state.optimizer, state.scheduler,
                              global_step=state.global_step, base_lr=self.recipe.optim.lr)
        state.progress.start(epoch)  # a checkpoint taken mid-epoch keeps what was consumed
        loader = self.loaders.train(epoch, state.progress)
        self._consumed = ConsumedSamples(state.progress)
        stats = BatchStats(self.task.num_outputs, batch_size=self.recipe.data.batch_size,
                           labels_of=self.task.batch_labels)
        train_mode(state.model, self.plan)  # frozen (and held) layers stay in eval mode
        clock = StepClock(world=self.world)
        loss_sum = torch.zeros((), device=self.device)  # on the device: no sync per step
        for group in clock.groups(loader, train.accum_steps):
            result = self.train_step(group, count=group.size)
            loss_sum += result.loss * result.samples
            for record in (self._consumed, stats, *self.records):
                record.add(epoch, state.global_step, result.batches)
            if train.checkpoint_every and state.global_step % train.checkpoint_every == 0:
                self.sync_progress()
                self.hooks.mid_epoch(self)
            if self.logger is not None and state.global_step % train.log_every == 0:
                self._log({"train/loss_step": result.loss.item(), "train/lr": self.lr,
                           **{f"train/loss_{k}": v.item() for k, v in result.parts.items()},
                           **clock.window_rates(), "progress/step": state.global_step,
                           "progress/epoch_float": epoch + clock.batches / max(len(loader), 1)},
                          step=state.global_step)
        return {"train/loss": loss_sum.item() / max(clock.images, 1), **clock.epoch_metrics(),
                "train/lr": self.lr, **stats.epoch_metrics(self.device)}

    def train_step(self, microbatches: Iterable, *, count: int | None = None) -> StepResult:
        """One optimizer step over ``count`` microbatches (all of a sequence by default): the
        loss of each is scaled by 1/count, gradients are synced across ranks only on the last;
        then clip, step, the per-step LR and the EMA update."""
        state, train = self.state, self.recipe.train
        if count is None:
            count = len(microbatches) if isinstance(microbatches, Sequence) else 1
        loss_sum, parts_sum, samples, batches = None, {}, 0, []
        for index, batch in enumerate(microbatches):
            loss, parts = self.forward_backward(batch, scale=1.0 / count,
                                                sync=index == count - 1)
            n = len(batch.id)
            loss_sum = loss * n if loss_sum is None else loss_sum + loss * n
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0) + value * n
            samples, batches = samples + n, batches + [batch]
        assert batches, "an optimizer step needs at least one microbatch"
        if train.grad_clip:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), train.grad_clip)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        if state.scheduler is not None:
            state.scheduler.step_update(num_updates=state.global_step)
        if state.ema is not None:
            state.ema.update(unwrap(state.model), step=state.global_step)
        return StepResult(loss=loss_sum / samples, samples=samples, batches=batches,
                          parts={k: v / samples for k, v in parts_sum.items()})

    def forward_backward(self, batch, *, scale: float = 1.0,
                         sync: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One microbatch: normalise on the device, mix, forward under autocast, backward of
        the loss times ``scale``; without ``sync`` the gradient all-reduce is skipped. Returns
        the (detached) loss and its named parts."""
        images = self.normalize(batch.image)
        if self.recipe.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = self.task.target_to(batch.target, images.device)
        images, target = self.task.mix(images, target)
        with no_sync(self.state.model, skip=not sync):
            with self.autocast:
                out = self.task.loss(self.state.model, images, target)
            loss = sum(out.values()) if isinstance(out, dict) else out
            (loss * scale).backward()
        parts = {k: v.detach() for k, v in out.items()} if isinstance(out, dict) else {}
        return loss.detach(), parts

    def validate(self, split: str = "val") -> dict[str, float]:
        """``val/*`` figures of the model and, with an EMA, ``val_ema/*`` of the average (one
        pass: the batches are decoded once for both); empty without a validation split."""
        if not self.loaders.has(split):
            return {}
        model = self.state.model
        nets = {"val": model if is_sharded(model) else unwrap(model)}
        if self.state.ema is not None:
            nets["val_ema"] = self.state.ema.module
        out = validation_pass(nets, self.loaders.eval(split), self.task, self.normalize,
                              autocast=self.autocast, device=self.device,
                              lockstep=is_sharded(model), img_size=self.recipe.data.img_size)
        train_mode(model, self.plan)
        return out

    # ------------------------------------------------------------------ state

    def sync_progress(self) -> None:
        """Merge every rank's trained sample ids into the epoch progress (a collective), before
        a checkpoint of the epoch so far."""
        if self._consumed is not None:
            self._consumed.sync()

    def state_dict(self) -> dict[str, Any]:
        """Everything resumable (every rank calls it: a sharded model gathers; rank 0's is
        whole)."""
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.load_state_dict(state)

    @property
    def lr(self) -> float:
        return self.state.optimizer.param_groups[0]["lr"]

    def _log(self, metrics: dict[str, float], *, step: int) -> None:
        if self.logger is not None and metrics:
            self.logger.log_metrics(metrics, step=step)


def autocast_for(amp: str, device: torch.device):
    """The recipe's mixed precision: bf16 autocast on a GPU (``auto``) or when asked."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    # bf16 needs no loss scaling, which keeps the step and its checkpoint state simple.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

