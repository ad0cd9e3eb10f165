"""Registering a run's checkpoint: which weights (model or EMA, which epoch), with its card.

``registry.weights: auto`` registers whichever of the model and its EMA validates better at the
selected epoch (``registry.select``: the last one, or the best by ``registry.metric``). An EMA
that has not caught up yet (a short fine-tune) therefore never displaces a better model. The
choice is written three ways: the card's ``selected`` (weights, metric, both candidates' scores),
the version tag ``weights_choice``, and a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from hypernym import tracking
from hypernym.data.dataset import Dataset, open_dataset
from hypernym.settings import Settings

__all__ = ["choose_weights", "load_weights", "register_checkpoint"]

log = logging.getLogger(__name__)


def choose_weights(recipe, state: dict[str, Any], metrics: dict[str, float]):
    """(weights, selected): the state dict to register and the card's ``selected`` record."""
    registry, ema = recipe.registry, recipe.train.ema_decay is not None
    if registry.select == "best":
        best = state["best"]  # the last checkpoint carries the best epoch's weights
        kind = best.get("kind") or next(iter(registry.candidates(ema)))
        selected = {"select": "best", "epoch": best["epoch"], "metric": best["metric"],
                    "value": best["value"], "weights": kind}
        if best.get("candidates"):
            selected["candidates"] = best["candidates"]
        return best["weights"], selected
    choice = registry.choose(metrics, ema)  # the last epoch's validation
    selected = {"select": "last", "epoch": state["position"]["epoch"]}
    if choice is None:  # nothing validated: the weights asked for, the model's for auto
        kind = "model" if registry.weights == "auto" else registry.weights
    else:
        kind = choice["kind"]
        selected.update(metric=choice["metric"], value=choice["value"],
                        candidates=choice["candidates"])
    selected["weights"] = kind
    return state[kind], selected


def register_checkpoint(recipe, checkpoint_dir: str | Path, run_id: str, *,
                        metrics: dict[str, float], settings: Settings,
                        dataset: Dataset | None = None, task=None, sweep: dict | None = None,
                        checkpoint_name: str | None = None):
    """Register the weights ``recipe.registry`` selects from a run's (last) checkpoint.

    Args:
        checkpoint_dir: a local checkpoint directory (``state.pt``).
        run_id: the MLflow run the model is logged with (its lineage).
        metrics: the run's last epoch metrics.
        dataset: the run's dataset, opened (opened here when None).
        task: the run's task (the recipe's when None): it builds the model the weights load
            into.
        sweep: for the best trial of a sweep: the sweep's run id, trial and score, recorded in
            the card's ``selected.sweep`` and the version tag ``sweep_run_id``.
        checkpoint_name: how errors name the checkpoint (its URI on run storage).

    Raises:
        hypernym.train.verify.CheckpointDamaged: the checkpoint does not match its manifest;
            nothing is registered.
    """
    from hypernym.registry.card import training_card
    from hypernym.registry.models import register_model, set_version_tags
    from hypernym.train.checkpoint import load_state
    from hypernym.train.tasks import build_task

    # verified against its manifest first: a damaged checkpoint fails before anything is built
    state = load_state(checkpoint_dir, name=checkpoint_name)
    dataset = dataset or open_dataset(recipe.data.path)
    manifest = dataset.manifest
    task = task or build_task(recipe, dataset)
    weights, selected = choose_weights(recipe, state, metrics)
    if sweep is not None:
        selected["sweep"] = sweep
    model = task.export_model(recipe)
    load_weights(model, weights)
    run = tracking.run_summary(run_id, settings=settings)
    metrics = {k: v for k, v in metrics.items() if not isinstance(v, bool)}
    card = training_card(recipe, manifest, arch=recipe.model.arch,
                         num_classes=task.num_outputs or len(manifest.classes),
                         weights=selected["weights"],
                         selected=selected, run_id=run_id,
                         parent=run.tags.get("hypernym.backbone") or None, metrics=metrics,
                         lineage=task.lineage())
    card = card.model_copy(update=task.card_fields(model, recipe=recipe, dataset=dataset))
    why = _explain(selected)
    log.info("registering %s: %s", recipe.registry.name, why)
    registered = register_model(run_id=run_id, name=recipe.registry.name, model=model, card=card,
                                alias=recipe.registry.alias, settings=settings)
    set_version_tags(registered.name, registered.version,
                     {"weights_choice": why, "sweep_run_id": sweep["run_id"] if sweep else ""},
                     settings=settings)
    return registered


def _explain(selected: dict[str, Any]) -> str:
    """E.g. ``model weights of epoch 3 (best val/top1 0.3167; model 0.3167, ema 0.0833)``."""
    text = f"{selected['weights']} weights of epoch {selected['epoch']}"
    if "metric" in selected:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in selected.get("candidates", {}).items())
        text += (f" ({selected['select']} {selected['metric']} {selected['value']:.4f}"
                 + (f"; {scores}" if scores else "") + ")")
    return text


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load a run's weights into a plain timm model. A run whose backbone was frozen (timm's
    ``freeze``: FrozenBatchNorm2d) has no BatchNorm ``num_batches_tracked`` counters: those
    alone may be missing."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    bad = [k for k in missing if not k.endswith("num_batches_tracked")]
    if bad or unexpected:
        raise RuntimeError(f"checkpoint weights do not fit {type(model).__name__}: missing "
                           f"{bad[:5]}, unexpected {list(unexpected)[:5]}")
