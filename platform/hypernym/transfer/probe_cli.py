"""`hypernym probe MODEL_REF [MODEL_REF ...] DATASET`: compare backbones by cheap probes.

Thin over `hypernym.transfer.probe.compare_backbones`: features once per model (Ray tasks, one
per shard), then k-NN and logistic-regression top-1 on the dataset's val split, random init
always a row. This is how to pick a backbone before paying for a fine-tune.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hypernym.errors import HypernymError
from hypernym.transfer.metrics import mean_std

__all__ = ["probe"]

out = Console()


def probe(
    args: Annotated[list[str], typer.Argument(
        metavar="MODEL_REF... DATASET",
        help="registered models (NAME, NAME@alias, NAME/VERSION), then a prepared dataset")],
    shots: Annotated[int | None, typer.Option(
        min=1, help="labelled training samples per class (few-shot); default: the whole split")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="few-shot draws (with --shots)")] = 3,
    img_size: Annotated[int | None, typer.Option(
        min=8, help="input size; default: the first model's card")] = None,
) -> None:
    """k-NN (k=10, 20; cosine, DINO's weighting) and linear-probe top-1 of backbones on DATASET."""
    from hypernym.transfer.probe import compare_backbones

    if len(args) < 2:
        raise HypernymError("give one or more registered models and then a prepared dataset, "
                            "e.g. `hypernym probe hypernym-demo-backbone@candidate "
                            ".hypernym/demo/data/digits --shots 10`")
    *refs, dataset = args
    try:
        rows = compare_backbones(refs, dataset, shots=shots, seeds=seeds, img_size=img_size)
    except ValueError as exc:
        raise HypernymError(str(exc)) from None
    what = f"{shots} per class, mean ± std over {seeds} seeds" if shots else "all training data"
    table = Table(title=f"val top-1 on {dataset} ({what})")
    probes = [k for k in rows[0] if k not in ("model", "seconds")]
    for column in ("model", *probes, "features (s)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["model"], *(mean_std(row[p]) for p in probes), f"{row['seconds']:.1f}")
    out.print(table)
