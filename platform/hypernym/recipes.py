"""Running a recipe: the one library entry the CLI, the demo and a submitted job all call.

`run_recipe` dispatches a validated recipe to its stage (prepare, or training) and returns what
the stage produced; it prints nothing. `describe` turns that result into the lines a console
shows (rich markup), so every caller reports a stage the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypernym.config import Recipe
    from hypernym.data.manifest import Manifest
    from hypernym.train.driver import TrainResult

__all__ = ["describe", "run_recipe"]


def run_recipe(recipe: Recipe, *, show_progress: bool = True, resume: str | None = None,
               in_process: bool = False) -> Manifest | TrainResult:
    """Run a validated recipe in this process (the same call a submitted job makes).

    Args:
        recipe: a prepare, pretrain or finetune recipe (`hypernym.config.parse_recipe`).
        show_progress: draw a progress bar on stderr.
        resume: for training, an MLflow run id to continue (see `run_training`).
            A fine-tune's run also gets the evaluation report of its val split
            (`hypernym.transfer.evaluation.report_finetune`).
        in_process: train in this process, without Ray (see `run_training`).

    Returns:
        The prepared dataset's manifest, or the training run's `TrainResult`.
    """
    if recipe.kind == "prepare":
        from hypernym.data.prepare import prepare

        return prepare(recipe, show_progress=show_progress)
    from hypernym.train.driver import run_training

    result = run_training(recipe, show_progress=show_progress, resume=resume,
                          in_process=in_process)
    if recipe.kind == "finetune":  # the evaluation report of the val split, into the same run
        from hypernym.transfer.evaluation import report_finetune

        report_finetune(recipe, result.run_id, registered=result.registered,
                        checkpoint=result.checkpoint, metrics=result.metrics,
                        dataset=result.dataset)
    return result


def describe(recipe: Recipe, result: Manifest | TrainResult) -> list[str]:
    """What a finished stage produced, as console lines (rich markup)."""
    if recipe.kind == "prepare":
        manifest = result
        lines = [f"[green]dataset ready[/] {recipe.output}: {len(manifest.classes)} classes, "
                 + ", ".join(f"{s} {manifest.num_samples(s)}" for s in manifest.splits)
                 + f", fingerprint {manifest.fingerprint[:12]}"]
        annotations = manifest.stats.get("annotations")
        if annotations:
            kind = "multi-label" if annotations["multi_label"] else "single-label"
            lines.append(f"annotations ({kind}): " + ", ".join(
                f"{split} {s['boxes']} boxes in {s['images_with_boxes']} of {s['images']} "
                f"images, {s['label_cardinality']['mean']:.2f} labels per image"
                for split, s in annotations["splits"].items()))
            skipped = {k: v for k, v in manifest.dropped.items() if k.startswith("annotation_")}
            if skipped:
                lines.append("skipped annotations: "
                             + ", ".join(f"{k.removeprefix('annotation_')} {v}"
                                         for k, v in skipped.items()))
        return lines
    shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val/", "train/l"))}
    lines = [f"[green]{recipe.kind} finished[/] run {result.run_id} metrics {shown}"]
    if result.registered is not None:
        reg = result.registered
        lines.append(f"registered [bold]{reg.name}[/] version {reg.version}"
                     + (f" alias @{reg.alias}" if reg.alias else ""))
    return lines
