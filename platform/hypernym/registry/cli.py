"""`hypernym models ...`: list, show, pull, export, lineage, promote (thin over the library)."""

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
    """Download the weights (sha256-checked), card, README and timm's config.json."""
    from hypernym.registry.card import CARD_FILE, WEIGHTS_FILE
    from hypernym.registry.models import pull

    path = pull(ref, out_dir)
    card = json.loads((path / CARD_FILE).read_text())
    files = ", ".join(sorted(p.name for p in path.iterdir()))
    out.print(f"pulled {ref} -> {path}: {files}")
    out.print(f"{WEIGHTS_FILE} sha256 {card.get('weights_sha256') or 'not recorded'} "
              f"{'(verified)' if card.get('weights_sha256') else ''}")
    if card.get("detection"):
        out.print(f'load without hypernym: sys.path.insert(0, "{path}"); from detector_model '
                  f'import load_detector; model = load_detector("{path}")')
    else:
        out.print(f'load without hypernym: timm.create_model("local-dir:{path}", '
                  'pretrained=True)')


@models_app.command("export")
def export_model(
    ref: str,
    out_dir: Annotated[Path, typer.Argument(help="a new or empty directory")],
    fmt: Annotated[str, typer.Option("--format", help="hf: the folder timm's push_to_hf_hub "
                                     "uploads")] = "hf",
) -> None:
    """Write a registered model in another layout (hf: Hugging Face Hub, via timm)."""
    from hypernym.registry.export import export

    files = export(ref, out_dir, fmt=fmt)
    out.print(f"exported {ref} ({fmt}) -> {out_dir}: {', '.join(p.name for p in files)}")
    out.print(f"publish: huggingface_hub.upload_folder(repo_id=..., folder_path='{out_dir}')")


@models_app.command()
def lineage(
    ref: str,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a tree")] = False,
) -> None:
    """Where a model came from: dataset -> runs -> versions, from MLflow alone."""
    from hypernym.registry.lineage import lineage as build

    chain = build(ref)
    if as_json:
        print(json.dumps(chain, indent=2))
        return
    from hypernym.registry.lineage_view import tree

    out.print(tree(chain))


@models_app.command()
def promote(
    ref: str,
    alias: Annotated[str, typer.Option("--alias", help="the alias to move")] = "champion",
    if_better: Annotated[str | None, typer.Option(
        "--if-better", metavar="METRIC", help="move only if the candidate's run recorded a "
        "better value of this metric than the current holder's (e.g. val/top1)")] = None,
    mode: Annotated[str, typer.Option(help="max: higher is better; min: lower")] = "max",
) -> None:
    """Point NAME@ALIAS at a version, optionally only if it beats the current holder."""
    from hypernym.errors import HypernymError
    from hypernym.registry.promote import promote as run_promote

    if mode not in ("max", "min"):
        raise HypernymError(f"--mode must be max or min, got {mode!r}")
    result = run_promote(ref, alias=alias, if_better=if_better, mode=mode)  # type: ignore[arg-type]
    verb = "[green]moved[/]" if result.moved else "[yellow]kept[/]"
    now = result.candidate if result.moved else result.previous
    out.print(f"{verb} {result.name}@{result.alias} -> "
              f"{'v' + str(now) if now is not None else 'nothing'}: {result.reason}")
