"""Training: the in-process core, its tasks, and the Ray Train shell around it (docs/training.md).

The public API, imported lazily (``import hypernym.train`` does not load torch):

- `Trainer` (`hypernym.train.core`): one worker's training, in a plain process.
- `Task`, `ClassificationTask`, `build_task` (`hypernym.train.tasks`): what depends on the
  objective.
- `ShardLoaders`, `TensorLoaders` (`hypernym.train.loaders`): where batches come from.
- `run_training`, `TrainResult` (`hypernym.train.driver`): a recipe on Ray Train, tracked in
  MLflow and registered.
"""

from __future__ import annotations

import importlib

__all__ = ["ClassificationTask", "ShardLoaders", "Task", "TensorLoaders", "TrainResult",
           "Trainer", "build_task", "run_training"]

_WHERE = {"Trainer": "core", "Task": "tasks", "ClassificationTask": "tasks",
          "build_task": "tasks", "ShardLoaders": "loaders", "TensorLoaders": "loaders",
          "run_training": "driver", "TrainResult": "driver"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"hypernym.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'hypernym.train' has no attribute {name!r}")
