"""The demo's closing table: every target setting, pretrained backbone against random init."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from hypernym.transfer.metrics import mean_std

__all__ = ["lead", "print_summary"]


def lead(pretrained: list[float], scratch: list[float]) -> float:
    """Pretrained minus random init, mean over seeds, in points of top-1."""
    return 100 * (statistics.fmean(pretrained) - statistics.fmean(scratch))


def print_summary(console: Console, cfg, f: dict, settings) -> None:
    """Print the closing table, the backbone's own figures, stage times and the MLflow UI line."""
    few, fs = f["few_shot"], cfg.few_shot
    table = Table(title="hypernym demo: digits val top-1, pretrained backbone vs random init "
                        "at the same budget (mean ± std over seeds; random init drawn per seed)")
    for column in ("target setting", "pretrained", "random init", "lead (points)"):
        table.add_column(column)
    settings_rows = [
        ("linear probe", f"few-shot linear probe ({fs.shots}/class, frozen "
                         + ("pooled features" if fs.probe_stages == 1
                            else f"features of the last {fs.probe_stages} stages")
                         + f"; {fs.seeds} seeds)"),
        ("fine-tune", f"few-shot full fine-tune ({fs.shots}/class, {fs.steps} steps; "
                      f"{fs.seeds} seeds)"),
    ]
    for key, title in settings_rows:
        pre, scratch = few[key]["pretrained"], few[key]["random init"]
        table.add_row(title, mean_std(pre), mean_std(scratch), f"{lead(pre, scratch):+.1f}")
    pre, scratch = f["curves"]["pretrained"][-1:], f["curves"]["scratch"][-1:]
    table.add_row(f"full-data fine-tune (all train digits, {cfg.finetune_epochs} epochs; 1 run)",
                  mean_std(pre), mean_std(scratch), f"{lead(pre, scratch):+.1f}")
    console.print(table)
    fine, back = f["finetuned"], f["backbone"]
    console.print("full-data fine-tune, val top-1 by epoch: pretrained "
                  + ", ".join(f"{v:.3f}" for v in f["curves"]["pretrained"]) + "; random init "
                  + ", ".join(f"{v:.3f}" for v in f["curves"]["scratch"])
                  + f"; registered {fine.name} v{fine.version} @{fine.alias}")
    console.print(f"backbone: {cfg.arch} pretrained {cfg.pretrain_epochs} epochs with the "
                  f"semantic softmax on the glyph mini-21K (val top-1 "
                  f"{f['pretrain_val_top1']:.3f}); registered {back.name} v{back.version} "
                  f"@{back.alias}")
    console.print("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in f["timings"].items())
                  + f"; total {f['wall_s']:.0f}s")
    console.print(f"MLflow UI on these runs: [bold]{settings.mlflow_ui_command()}[/]")
