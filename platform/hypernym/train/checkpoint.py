"""Training state saved together under fixed keys (DESIGN.md, principle 4).

A checkpoint is a directory with ``state.pt`` (model, optimizer, scheduler, position, RNG) and
``recipe.json`` (the resolved recipe). Checkpoints are our own output, not registry content, but
they are still loaded with ``weights_only=True``: nothing in them needs arbitrary unpickling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["STATE_FILE", "TrainState", "load_state", "save_state", "unwrap"]

STATE_FILE = "state.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP (its state dict keys carry no ``module.`` prefix)."""
    return getattr(model, "module", model)


class TrainState:
    """The resumable things of one worker, saved and restored as one unit."""

    def __init__(self, *, model, optimizer, scheduler=None, progress=None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.progress = progress  # hypernym.data.schedule.EpochProgress: the reader's position
        self.epoch = 0  # the next epoch to run
        self.global_step = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "position": {"epoch": self.epoch, "global_step": self.global_step},
            # The samples of the current epoch already trained on: a resumed run reads the rest.
            "data": self.progress.state_dict() if self.progress is not None else None,
            # Only torch's generator drives the loop (dropout, timm augment); the data order is
            # a pure function of (seed, epoch, world size, consumed samples).
            "rng": {"torch": torch.get_rng_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["position"]["epoch"])
        self.global_step = int(state["position"]["global_step"])
        if self.progress is not None and state.get("data") is not None:
            self.progress.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])


def save_state(directory: str | Path, state: TrainState, recipe: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state.state_dict(), directory / STATE_FILE)
    (directory / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
    return directory


def load_state(directory: str | Path) -> dict[str, Any]:
    # Tensors and plain containers only, so weights_only loading is enough.
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
