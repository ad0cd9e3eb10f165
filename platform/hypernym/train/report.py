"""Checkpoints reported to Ray Train, mid-epoch and at each epoch's end, and the best epoch.

Every rank reports the same number of times (``ray.train.report`` is a barrier). DDP replicas are
identical, so rank 0's state is the checkpoint; a sharded (FSDP) model's state is gathered by all
ranks together, into rank 0. With ``registry.select: best`` each epoch end also keeps the best
epoch's weights so far, which the last checkpoint carries for registration.
"""

from __future__ import annotations

import tempfile
from typing import Any

import ray.train

from hypernym.config import RegisterSpec
from hypernym.errors import HypernymError
from hypernym.train.checkpoint import TrainState, save_state
from hypernym.train.distributed import is_sharded

__all__ = ["Reporter"]


class Reporter:
    """Reports a worker's checkpoints.

    Args:
        rank: this worker's world rank (rank 0 writes the checkpoint).
        recipe: the resolved recipe, stored beside every checkpoint.
        registry: the recipe's ``registry`` section (which epoch is "best", and by what).
        ema: whether the run keeps an EMA of the weights.
        name_suffix: appended to every checkpoint's directory name (after a restore that
            skipped damaged checkpoints: `hypernym.train.restore.Restored.name_suffix`).
    """

    def __init__(self, *, rank: int, recipe: dict[str, Any], registry: RegisterSpec,
                 ema: bool, name_suffix: str = "") -> None:
        self.rank, self.recipe, self.registry, self.ema = rank, recipe, registry, ema
        self.name_suffix = name_suffix

    def mid_epoch(self, state: TrainState) -> None:
        """A checkpoint of the epoch so far (its progress must be synced first)."""
        self._report(state, {"progress/step": state.global_step},
                     name=f"step-{state.global_step:08d}{self.name_suffix}")

    def epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """The epoch's checkpoint and metrics; with ``select: best``, the best epoch so far."""
        payload = self._payload(state)
        if self.registry.select == "best":  # an epoch end, validated
            self._track_best(state, metrics, payload if self.rank == 0 else None)
            if payload is not None:
                payload["best"] = state.best
        self._report(state, metrics, name=f"epoch-{state.epoch:04d}{self.name_suffix}",
                     payload=payload)

    def _payload(self, state: TrainState) -> dict | None:
        return state.state_dict() if self.rank == 0 or is_sharded(state.model) else None

    def _report(self, state: TrainState, metrics: dict[str, float], *, name: str,
                payload: dict | None = None) -> None:
        if payload is None:
            payload = self._payload(state)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                save_state(tmp, payload, self.recipe)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    def _track_best(self, state: TrainState, metrics: dict[str, float], payload) -> None:
        """Keep the epoch's weights if its ``registry.metric`` beats the best so far; with
        ``weights: auto`` and an EMA, the better of the model and the EMA competes. Every rank
        sees the same (all-reduced) metrics, so every rank agrees; rank 0 keeps the weights."""
        registry = self.registry
        choice = registry.choose(metrics, self.ema)
        if choice is None:
            wanted = sorted(registry.candidates(self.ema).values())
            raise HypernymError(
                f"registry.metric {', '.join(wanted)} is not among this run's epoch metrics "
                f"{sorted(k for k in metrics if k.startswith('val'))}: pick one of those")
        best = state.best
        if best is not None and not (choice["value"] > best["value"] if registry.mode == "max"
                                     else choice["value"] < best["value"]):
            return
        weights = None
        if payload is not None:
            weights = {k: v.detach().to("cpu", copy=True)
                       for k, v in payload[choice["kind"]].items()}
        state.best = {**choice, "epoch": state.epoch, "weights": weights}
