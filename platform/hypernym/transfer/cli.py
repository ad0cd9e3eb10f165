"""`hypernym eval` and `hypernym contamination` (thin over evaluation.py and contamination.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hypernym.errors import HypernymError

__all__ = ["contamination", "eval_model"]

out = Console(soft_wrap=True)


def eval_model(
    model_ref: Annotated[str, typer.Argument(help="NAME, NAME@alias or NAME/VERSION")],
    dataset: Annotated[str, typer.Argument(help="a prepared dataset (path or s3://)")],
    split: Annotated[str, typer.Option(help="the split to evaluate")] = "val",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the eval run")] =
        "hypernym",
    check_contamination: Annotated[bool, typer.Option(
        "--contamination", help="also check the split against the backbone's pretraining "
        "data (from the model's lineage)")] = False,
) -> None:
    """Evaluation report of a registered model on a prepared dataset, in an MLflow run."""
    from hypernym.transfer.eval_report import print_report
    from hypernym.transfer.evaluation import run_eval

    report, run_id = run_eval(model_ref, dataset, split=split, batch_size=batch_size,
                              experiment=experiment, contamination=check_contamination)
    print_report(report, out, title=f"{model_ref} on {dataset}")
    out.print(f"logged to MLflow run {run_id} (metrics eval/*, images eval/confusion_matrix.png "
              "and eval/reliability_diagram.png, tables eval/*.json)")


def contamination(
    dataset: Annotated[str, typer.Argument(help="the evaluation dataset (path or s3://)")],
    against: Annotated[str | None, typer.Option(
        "--against", help="the pretraining dataset; default: from --backbone's lineage")] = None,
    backbone: Annotated[str | None, typer.Option(
        "--backbone", help="a registered backbone whose training run names its dataset")] = None,
    split: Annotated[list[str] | None, typer.Option(
        "--split", help="evaluation split(s) to check (repeatable; default val)")] = None,
    run: Annotated[str | None, typer.Option(
        "--run", metavar="RUN_ID", help="log the result into this MLflow run (e.g. the "
        "fine-tune's); the eval report then shows it")] = None,
    threshold: Annotated[int, typer.Option(
        min=0, max=256, help="near duplicate: at most this many of the 256 hash bits differ")]
        = 60,
    examples: Annotated[int, typer.Option(min=0, help="matches printed")] = 10,
) -> None:
    """Find evaluation images that also appear in the pretraining data (exact and near copies)."""
    from hypernym.transfer.contamination import (
        check_contamination,
        lineage_dataset,
        log_contamination,
    )

    if (against is None) == (backbone is None):
        raise HypernymError("give the pretraining dataset with --against DATASET, or a "
                            "registered backbone with --backbone REF (one of them)")
    against = against or lineage_dataset(backbone)
    result = check_contamination(dataset, against, splits=split or ["val"], threshold=threshold)
    per_s = result.checked + result.against_images
    out.print(f"checked {result.checked} evaluation images against {result.against_images} "
              f"images of {against} in {result.seconds:.1f} s ({per_s / result.seconds:.0f} "
              f"images/s): [bold]{result.exact}[/] exact and [bold]{result.near}[/] near "
              "duplicates")
    if result.matches and examples:
        table = Table(title=f"first {min(examples, len(result.matches))} of "
                            f"{len(result.matches)} matching pairs")
        for col in ("evaluation image", "pretraining image", "kind", "distance"):
            table.add_column(col)
        for m in result.matches[:examples]:
            table.add_row(m["query"], m["against"], m["kind"], str(m["distance"]))
        out.print(table)
    if run:
        log_contamination(result, run)
        out.print(f"logged to MLflow run {run} (contamination/*)")
