"""`hypernym models ...`: list, show and pull registered models (thin over models.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True)
out = Console()


@models_app.command("list")
def list_models() -> None:
    """Registered models, their newest version, aliases and lineage."""
    from hypernym.registry.models import list_registered

    rows = list_registered()
    if not rows:
        out.print("no registered models yet: run `hypernym pretrain` with registry.name set")
        return
    table = Table("name", "versions", "latest", "aliases", "task", "arch", "run")
    for row in rows:
        tags = row["tags"]
        aliases = ", ".join(f"@{a}→v{v}" for a, v in sorted(row["aliases"].items()))
        table.add_row(row["name"], str(row["versions"]), f"v{row['latest']}", aliases,
                      tags.get("task", ""), tags.get("arch", ""), tags.get("run_id", "")[:12])
    out.print(table)


@models_app.command()
def show(ref: str) -> None:
    """The model card of NAME, NAME@alias or NAME/VERSION."""
    from hypernym.registry.models import load_card, resolve

    version = resolve(ref)
    card = load_card(f"{version.name}/{version.version}")
    out.print(f"[bold]{version.name}[/] v{version.version} ({version.source})")
    out.print_json(json.dumps(card.model_dump(mode="json")))


@models_app.command("pull")
def pull_model(
    ref: str,
    out_dir: Annotated[Path, typer.Option("--out", help="directory for the files")] = Path("."),
) -> None:
    """Download model.safetensors + card.json (load them with timm, or hypernym.load_backbone)."""
    from hypernym.registry.models import pull

    path = pull(ref, out_dir)
    out.print(f"pulled {ref} -> {path}/model.safetensors, {path}/card.json")
