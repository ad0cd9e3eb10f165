"""Training tasks: what depends on the objective (targets, loss, metrics, head).

`build_task` makes a recipe's task (with ``train.distill``, wrapped in `DistillTask`, see
docs/distillation.md); a custom `Task` subclass can be handed to `hypernym.train.core.Trainer` or
`hypernym.train.run_training` directly (docs/training.md).
"""

from __future__ import annotations

from hypernym.train.tasks.base import Meter, Task
from hypernym.train.tasks.classification import ClassificationMeter, ClassificationTask
from hypernym.train.tasks.detection import DetectionTask
from hypernym.train.tasks.multilabel import MultiLabelMeter, MultiLabelTask

__all__ = ["TASKS", "ClassificationMeter", "ClassificationTask", "DetectionTask", "Meter",
           "MultiLabelMeter", "MultiLabelTask", "Task", "build_task"]

# recipe ``task`` -> the task class (each has ``from_recipe(recipe, dataset)``)
TASKS: dict[str, type[Task]] = {"classification": ClassificationTask,
                                "detection": DetectionTask,
                                "multilabel": MultiLabelTask}


def build_task(recipe, dataset) -> Task:
    """The task a recipe names (``task``), for its dataset.

    Raises:
        HypernymError: the recipe does not fit the task or the dataset (for example the
            semantic softmax on classes without a hierarchy, or a teacher of other classes).
    """
    task = TASKS[getattr(recipe, "task", "classification")].from_recipe(recipe, dataset)
    if getattr(recipe.train, "distill", None) is not None:  # a teacher on top of the task
        from hypernym.train.tasks.distill import DistillTask

        task = DistillTask.from_recipe(recipe, dataset, base=task)
    return task
