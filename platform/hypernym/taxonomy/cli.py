"""`hypernym taxonomy stats`: the WordNet hierarchy's shape for a class list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hypernym.errors import HypernymError
from hypernym.taxonomy.build import timm_info_dir

__all__ = ["class_list", "taxonomy_app"]

taxonomy_app = typer.Typer(no_args_is_help=True)
out = Console()
# timm ships both lists: Google's fall11 ImageNet-21K and the 10,450 winter21 21K-P classes.
_LISTS = {"21k": "imagenet21k_goog_synsets.txt", "21k-p": "imagenet21k_miil_w21_synsets.txt"}


def class_list(name: str) -> list[str]:
    """``21k``, ``21k-p`` or a file with one synset id per line."""
    if name in _LISTS:
        text = (timm_info_dir() / _LISTS[name]).read_text()
    elif Path(name).is_file():
        text = Path(name).read_text()
    else:
        raise HypernymError(f"--classes {name!r}: expected 21k, 21k-p or a file of synset ids "
                            "(one per line), and no such file exists")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


@taxonomy_app.command()
def stats(
    classes: Annotated[str, typer.Option(help="21k, 21k-p, or a file of synset ids")] = "21k",
) -> None:
    """Classes per WordNet depth and per semantic level (the levels of a semantic softmax)."""
    from hypernym.taxonomy.hierarchy import stats as compute

    ids = class_list(classes)
    figures = compute(ids)
    by_depth, by_level = figures["classes_per_depth"], figures["classes_per_semantic_level"]
    out.print(f"{figures['classes']} classes; depth max {figures['max_depth']}, "
              f"mean {figures['mean_depth']:.2f} (entity = 0, first-hypernym paths)")
    out.print(f"{len(by_level)} semantic levels (a class's level: its ancestors that are "
              "classes too)")
    table = Table("depth / level", "classes at depth", "classes at semantic level")
    for n in range(max([*by_depth, *by_level], default=-1) + 1):
        table.add_row(str(n), str(by_depth.get(n, "")), str(by_level.get(n, "")))
    out.print(table)
