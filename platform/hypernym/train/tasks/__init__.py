"""Training tasks: what depends on the objective (targets, loss, metrics, head).

`build_task` makes a recipe's task; a custom `Task` subclass can be handed to
`hypernym.train.core.Trainer` or `hypernym.train.run_training` directly (docs/training.md).
"""

from __future__ import annotations

from hypernym.train.tasks.base import Meter, Task
from hypernym.train.tasks.classification import ClassificationMeter, ClassificationTask
from hypernym.train.tasks.detection import DetectionTask

__all__ = ["TASKS", "ClassificationMeter", "ClassificationTask", "DetectionTask", "Meter", "Task",
           "build_task"]

# recipe ``task`` -> the task class (each has ``from_recipe(recipe, dataset)``)
TASKS: dict[str, type[Task]] = {"classification": ClassificationTask,
                                "detection": DetectionTask}


def build_task(recipe, dataset) -> Task:
    """The task a recipe names (``task``), for its dataset.

    Raises:
        HypernymError: the recipe does not fit the task or the dataset (for example the
            semantic softmax on classes without a hierarchy).
    """
    return TASKS[getattr(recipe, "task", "classification")].from_recipe(recipe, dataset)
