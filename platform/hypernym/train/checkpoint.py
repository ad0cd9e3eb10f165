"""Training state saved together under fixed keys (docs/architecture.md, "Principles").

A checkpoint is a directory with ``state.pt`` (model, optimizer, scheduler, EMA, position, reader
progress, RNG), ``recipe.json`` (the resolved recipe) and, written last,
``checkpoint_manifest.json`` (their sizes and sha256: `hypernym.train.verify`). Checkpoints are
our own output, not registry content, but they are still loaded with ``weights_only=True``:
nothing in them needs arbitrary unpickling.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["STATE_FILE", "TrainState", "load_state", "save_state"]

STATE_FILE = "state.pt"


class TrainState:
    """The resumable things of one worker, saved and restored as one unit."""

    def __init__(self, *, model, optimizer, scheduler=None, progress=None, ema=None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.progress = progress  # hypernym.data.schedule.EpochProgress: the reader's position
        self.ema = ema  # timm.utils.ModelEmaV3 or None
        self.epoch = 0  # the next epoch to run
        self.global_step = 0
        # With registry.select: best, the best epoch so far: {metric, value, epoch, weights};
        # rank 0 holds the weights (a CPU copy), every checkpoint carries them.
        self.best: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Every rank calls this (a sharded model gathers its tensors); rank 0's is complete."""
        from hypernym.train.distributed import state_dicts

        model, optimizer = state_dicts(self.model, self.optimizer)
        return {
            "model": model,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            # bf16 autocast needs no loss scaling, so there is no GradScaler state to keep.
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "position": {"epoch": self.epoch, "global_step": self.global_step},
            "best": self.best,
            # The samples of the current epoch already trained on: a resumed run reads the rest.
            "data": self.progress.state_dict() if self.progress is not None else None,
            # torch's generators drive dropout and drop-path (and seed the loader workers),
            # numpy's timm's Mixup draws, Python's the crops of a loader without workers; the
            # data order is a pure function of (seed, epoch, world size, consumed samples).
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(),
                    "python": _python_rng_state(),
                    **({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {})},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from hypernym.train.distributed import load_state_dicts

        load_state_dicts(self.model, self.optimizer, state["model"], state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            # A run that turns EMA on when resuming starts its average from the current weights.
            self.ema.module.load_state_dict(state.get("ema") or state["model"])
        self.epoch = int(state["position"]["epoch"])
        self.best = state.get("best")
        self.global_step = int(state["position"]["global_step"])
        if self.progress is not None and state.get("data") is not None:
            self.progress.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if "numpy" in state["rng"]:
            _set_numpy_rng_state(state["rng"]["numpy"])
        if "python" in state["rng"]:
            _set_python_rng_state(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def _set_python_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["version"], tuple(state["internal"].tolist()), state["gauss"]))


def _numpy_rng_state() -> dict[str, Any]:
    # As tensors and numbers: weights_only loading refuses numpy objects.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state(("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["gauss"]))


def save_state(directory: str | Path, state: dict[str, Any], recipe: dict[str, Any]) -> Path:
    """Write ``state`` (a ``TrainState.state_dict()``), the resolved recipe, and last the
    manifest of both (`hypernym.train.verify`)."""
    from hypernym.train.verify import write_manifest

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / STATE_FILE)
    (directory / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
    position = state.get("position") or {}
    write_manifest(directory, step=position.get("global_step", 0),
                   epoch=position.get("epoch", 0))
    return directory


def load_state(directory: str | Path, *, verify: bool = True,
               name: str | None = None) -> dict[str, Any]:
    """The state saved in ``directory``.

    Args:
        verify: check the directory against its manifest first (skip it only for a copy
            verified already).
        name: how an error names the checkpoint (its URI on run storage); default the path.

    Raises:
        hypernym.train.verify.CheckpointDamaged: the checkpoint is not whole.
    """
    if verify:
        from hypernym.train.verify import verify_checkpoint

        verify_checkpoint(directory, name=name)
    # Tensors and plain containers only, so weights_only loading is enough.
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
