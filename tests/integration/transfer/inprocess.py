"""A fine-tune run in this process, by the training loop's own parts, for tests and benchmarks.

`hypernym finetune` runs `hypernym.train.loop.train_loop_per_worker` in Ray Train workers. This
runs the same steps for one worker in the calling process, without Ray: `build_model` (random
init or a registered backbone, the mode's frozen layers), timm's optimizer and scheduler, the
loop's step kit, the training loader (`data_loader`, random-resized crops and flips), and per
epoch `train_epoch` then the loop's validation. What it leaves out: DDP (one worker), Ray
Train's reports and checkpoints, MLflow logging from the loop. `register` then registers the
result through the trainer's own `register_checkpoint`, so the card is a fine-tune's card.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from hypernym.config import FinetuneRecipe, parse_recipe
from hypernym.data.manifest import read_manifest
from hypernym.data.reader import data_loader, steps_per_epoch
from hypernym.train.build import build_model, build_optimizer, build_scheduler, task_spec
from hypernym.train.checkpoint import TrainState, save_state
from hypernym.train.epoch import train_epoch
from hypernym.train.loop import _step_kit, _validate

__all__ = ["InProcessRun", "finetune_in_process", "register"]


@dataclass
class InProcessRun:
    """The trained state and, per epoch, the loop's metrics plus ``train_s`` and ``val_s``."""

    recipe: FinetuneRecipe
    state: TrainState
    epochs: list[dict[str, float]] = field(default_factory=list)


def finetune_in_process(raw_recipe: dict, *, backbone: str | None = None,
                        settings=None) -> InProcessRun:
    """Fine-tune as one worker of `hypernym finetune` would, in this process.

    Args:
        raw_recipe: a finetune recipe mapping; ``train.epochs`` must be set (the BiT budget is
            resolved by the trainer, not here).
        backbone: a concrete ``NAME/VERSION`` to start from (the trainer resolves aliases).
    """
    recipe = parse_recipe(raw_recipe, source="in-process fine-tune")
    data, train = recipe.data, recipe.train
    if "epochs" not in train.model_fields_set:
        raise ValueError("set train.epochs: the in-process fine-tune does not resolve budgets")
    torch.manual_seed(data.seed)
    np.random.seed(data.seed)
    random.seed(data.seed)
    manifest = read_manifest(data.path)
    steps = steps_per_epoch(manifest, "train", world_size=1, batch_size=data.batch_size)
    model = build_model(task_spec(recipe, manifest, backbone=backbone, settings=settings))
    optimizer = build_optimizer(model, recipe.optim)
    scheduler = build_scheduler(optimizer, recipe.optim, epochs=train.epochs,
                                steps=math.ceil(steps / train.accum_steps))
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler)
    kit = _step_kit(data, train, manifest, torch.device("cpu"))
    run = InProcessRun(recipe=recipe, state=state)
    for epoch in range(train.epochs):
        model.hypernym_finetune.enter_epoch(epoch, optimizer, scheduler,
                                            global_step=state.global_step,
                                            base_lr=recipe.optim.lr)
        started = time.perf_counter()
        loader = data_loader(data, manifest, "train", rank=0, world_size=1, epoch=epoch)
        metrics = train_epoch(state, loader, kit, logger=None, world=1, epoch=epoch,
                              steps=loader.steps)
        metrics["train_s"] = time.perf_counter() - started
        started = time.perf_counter()
        metrics.update(_validate(state, data, manifest, kit, rank=0, world=1))
        metrics["val_s"] = time.perf_counter() - started
        state.epoch = epoch + 1
        run.epochs.append(metrics)
    return run


def register(run: InProcessRun, *, settings):
    """Register the run's last weights under ``recipe.registry`` as the trainer does (an MLflow
    run of the recipe's experiment holding the model; the card names the dataset and recipe)."""
    from hypernym.tracking import end_run, start_run
    from hypernym.train.registration import register_checkpoint

    recipe = run.recipe
    run_id = start_run(experiment=recipe.experiment, run_name=recipe.name or "in-process",
                       settings=settings, tags={"hypernym.kind": "finetune"})
    metrics = {k: v for k, v in run.epochs[-1].items() if "/" in k}
    with tempfile.TemporaryDirectory() as tmp:
        save_state(tmp, run.state.state_dict(), recipe.model_dump(mode="json"))
        registered = register_checkpoint(recipe, tmp, run_id, metrics=metrics, settings=settings)
    end_run(run_id, "FINISHED", settings=settings)
    return registered
