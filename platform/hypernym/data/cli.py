"""`hypernym data inspect URI`: summary of a prepared dataset and a contact sheet PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["data_app"]

data_app = typer.Typer(no_args_is_help=True)
out = Console(soft_wrap=True)


@data_app.command()
def inspect(
    uri: str,
    sheet: Annotated[Optional[Path], typer.Option(help="contact sheet PNG path")] = None,
    classes: Annotated[int, typer.Option(help="rows in the contact sheet")] = 16,
) -> None:
    """Print what a dataset holds and write a contact sheet of samples per class."""
    from hypernym.data.inspect import contact_sheet, summary
    from hypernym.data.manifest import read_manifest

    info = summary(read_manifest(uri))
    out.print(f"[bold]{info['name']}[/]: {info['classes']} classes, hierarchy "
              f"{info['hierarchy']}, fingerprint {info['fingerprint'][:16]}")
    table = Table("split", "shards", "samples", "MB")
    for split, s in info["splits"].items():
        table.add_row(split, str(s["shards"]), str(s["samples"]), f"{s['bytes'] / 1e6:.1f}")
    out.print(table)
    if info["dropped"]:
        out.print("dropped: " + ", ".join(f"{k} {v}" for k, v in info["dropped"].items()))
    annotations = info["annotations"]
    if annotations:
        kind = "multi-label" if annotations["multi_label"] else "single-label"
        out.print(f"annotations: {kind}, boxes in {annotations['box_format']}")
        for split, s in annotations["splits"].items():
            cardinality = s["label_cardinality"]
            out.print(f"  {split}: {s['images_with_boxes']} of {s['images']} images with boxes, "
                      f"{s['boxes']} boxes; labels per image {cardinality['mean']:.2f} "
                      f"(max {cardinality['max']})")
    path = contact_sheet(uri, sheet or Path(f"{info['name']}-contact.png"), classes=classes)
    out.print(f"contact sheet: {path}")
