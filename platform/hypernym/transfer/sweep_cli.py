"""``hypernym sweep``: a thin command over `hypernym.transfer.sweep.sweep_file`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["sweep"]

console = Console(stderr=True, soft_wrap=True)


def sweep(
    recipe: Annotated[Path, typer.Argument(help="a pretrain or finetune recipe YAML")],
    space: Annotated[Path, typer.Option(help="search space YAML: key: {sampler: args}")],
    trials: Annotated[int, typer.Option(help="samples of the space (grid values multiply)")] = 8,
    max_concurrent: Annotated[int | None, typer.Option(help="trials at once (default: as the "
                                                             "cluster's CPUs allow)")] = None,
    metric: Annotated[str, typer.Option(
        help="epoch metric ASHA and the pick use; auto: the task's (val/top1, val/map)")] = "auto",
    mode: Annotated[str, typer.Option(help="max or min")] = "max",
    grace_period: Annotated[int, typer.Option(help="epochs before ASHA may stop a trial")] = 1,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a recipe key: key.path=value (repeatable).")] = None,
) -> None:
    """Sweep a recipe's hyperparameters with Ray Tune and ASHA; register the best trial."""
    from hypernym.transfer.sweep import sweep_file

    result = sweep_file(recipe, space, list(set_ or []), trials=trials,
                        max_concurrent=max_concurrent, metric=metric, mode=mode,
                        grace_period=grace_period)
    metric = result.metric
    table = Table(title=f"sweep run {result.run_id}: {metric} ({mode})")
    for column in ("trial", *result.trials[0].values, "epochs", metric, "ended"):
        table.add_column(column)
    for t in sorted(result.trials, key=lambda t: t.trial_id):
        ended = "error" if t.error else "stopped (ASHA)" if t.stopped_early else "finished"
        mark = " *" if result.best and t.trial_id == result.best.trial_id else ""
        table.add_row(t.trial_id + mark, *(_fmt(v) for v in t.values.values()), str(t.epochs),
                      _fmt(t.metric), ended)
    console.print(table)
    if result.registered is not None:
        reg = result.registered
        console.print(f"registered [bold]{reg.name}[/] version {reg.version} (best trial "
                      f"{result.best.trial_id}, run {result.best.run_id})")
    console.print(f"sweep finished in {result.wall_s:.0f} s")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
