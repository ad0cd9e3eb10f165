"""`hypernym taxonomy stats`: the WordNet hierarchy's shape for a class list."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["taxonomy_app"]

taxonomy_app = typer.Typer(no_args_is_help=True)
out = Console()
# timm ships both lists: Google's fall11 ImageNet-21K and the 10,450 winter21 21K-P classes.
_LISTS = {"21k": "imagenet21k_goog_synsets.txt", "21k-p": "imagenet21k_miil_w21_synsets.txt"}


def class_list(name: str) -> list[str]:
    """``21k``, ``21k-p`` or a file with one synset id per line."""
    if name in _LISTS:
        text = resources.files("timm.data._info").joinpath(_LISTS[name]).read_text()
    else:
        text = Path(name).read_text()
    return [line.split()[0] for line in text.splitlines() if line.strip()]


@taxonomy_app.command()
def stats(
    classes: Annotated[str, typer.Option(help="21k, 21k-p, or a file of synset ids")] = "21k",
) -> None:
    """Classes per WordNet depth (the levels a semantic softmax works over)."""
    from hypernym.taxonomy.hierarchy import stats as compute

    ids = class_list(classes)
    figures = compute(ids)
    out.print(f"{figures['classes']} classes; depth max {figures['max_depth']}, "
              f"mean {figures['mean_depth']:.2f} (entity = 0, first-hypernym paths)")
    table = Table("depth", "classes")
    for depth, count in figures["classes_per_depth"].items():
        table.add_row(str(depth), str(count))
    out.print(table)
