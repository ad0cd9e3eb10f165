"""`hypernym demo`: the whole pipeline on generated data, on one machine, in a few minutes.

prepare (a miniature winter21 release + scikit-learn's digits) -> pretrain on Ray Train -> register
-> fine-tune from the registered backbone, and from random init with the same budget -> register ->
pull. Every stage is the library function the CLI and submitted jobs call, with a real recipe; the
recipes it ran are written beside the data so each stage can be rerun with `hypernym run`.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from hypernym.config import parse_recipe
from hypernym.recipes import describe, run_recipe
from hypernym.settings import get_settings

__all__ = ["DemoConfig", "demo_recipes", "run_demo"]

console = Console(stderr=True, soft_wrap=True)  # commands stay copy-pastable


class DemoConfig(BaseModel):
    """The demo's knobs (``hypernym demo --set key=value``)."""

    model_config = ConfigDict(extra="forbid")

    images_per_class: int = Field(60, ge=10)
    arch: str = "resnet10t"
    img_size: int = Field(64, ge=16, description="training resolution")
    pretrain_epochs: int = Field(10, ge=1)
    finetune_epochs: int = Field(2, ge=1, description="a small budget: where pretraining shows")
    batch_size: int = Field(32, ge=1)
    workers: int = Field(2, ge=1, description="Ray Train workers")
    backbone_name: str = "hypernym-demo-backbone"
    finetuned_name: str = "hypernym-demo-digits"


def demo_recipes(cfg: DemoConfig, workdir: Path) -> dict[str, dict]:
    """The demo's recipes as raw mappings (validated by the caller like any YAML recipe)."""
    data = workdir / "data"
    common = {
        "experiment": "hypernym-demo",
        "model": {"arch": cfg.arch},
        "scaling": {"num_workers": cfg.workers, "cpus_per_worker": 1},
        "train": {"log_every": 5},
    }
    loader = {"img_size": cfg.img_size, "batch_size": cfg.batch_size}
    finetune = {
        **common,
        "kind": "finetune",
        # digits fill the frame: small random crops would cut them to unreadable strokes
        "data": {"path": str(data / "digits"), **loader, "crop_scale": [0.5, 1.0]},
        "optim": {"opt": "adamw", "lr": 2e-3, "weight_decay": 0.01, "warmup_epochs": 0},
        "train": {**common["train"], "epochs": cfg.finetune_epochs},
    }
    return {
        "prepare-mini21k": {
            "kind": "prepare", "source": str(workdir / "raw" / "winter21"),
            "output": str(data / "mini21k"), "source_format": "winter21", "val_per_class": 10,
            "min_per_class": 0,
            "image_size": int(cfg.img_size * 1.15), "resize": "shorter", "shard_samples": 128,
            "overwrite": True,
        },
        "prepare-digits": {
            "kind": "prepare", "source": str(workdir / "raw" / "digits"),
            "output": str(data / "digits"), "source_format": "folder", "val_per_class": 30,
            "min_per_class": 0,
            "image_size": cfg.img_size, "resize": "squish", "shard_samples": 256,
            "overwrite": True,
        },
        "pretrain": {
            **common,
            "kind": "pretrain", "name": "demo-pretrain",
            "data": {"path": str(data / "mini21k"), **loader},
            "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 1},
            "train": {**common["train"], "epochs": cfg.pretrain_epochs, "label_smoothing": 0.1},
            "registry": {"name": cfg.backbone_name, "alias": "candidate"},
        },
        "finetune": {
            **finetune, "name": "demo-finetune",
            "backbone": f"{cfg.backbone_name}@candidate",
            "registry": {"name": cfg.finetuned_name, "alias": "candidate"},
        },
        "finetune-scratch": {
            **finetune, "name": "demo-finetune-scratch", "backbone": None,
            "registry": {"name": None},
        },
    }


def run_demo(cfg: DemoConfig, *, workdir: Path | None = None) -> dict:
    """Run every stage; print a table of what came out. Returns the figures for tests."""
    from hypernym.data.demo import make_digits_folder, make_winter21
    from hypernym.registry.models import load_backbone, pull

    settings = get_settings()
    workdir = (workdir or settings.home / "demo").resolve()
    raw = workdir / "raw"
    started = time.perf_counter()
    recipes = {}
    for name, raw_recipe in demo_recipes(cfg, workdir).items():
        recipes[name] = parse_recipe(raw_recipe, source=f"demo recipe {name}")
    _write_recipes(recipes, workdir / "recipes")

    def run(name: str):
        result = run_recipe(recipes[name])
        for line in describe(recipes[name], result):
            console.print(line)
        return result

    timings: dict[str, float] = {}

    def stage(title: str, fn):
        console.rule(f"[bold cyan]{title}")
        t0 = time.perf_counter()
        out = fn()
        timings[title] = time.perf_counter() - t0
        return out

    synsets = stage("generate data", lambda: (
        make_winter21(raw / "winter21", images_per_class=cfg.images_per_class),
        make_digits_folder(raw / "digits"),
    ))[0]
    console.print(f"miniature winter21: {len(synsets)} synsets; digits: 10 classes")
    stage("prepare", lambda: [run(k) for k in ("prepare-mini21k", "prepare-digits")])
    pre = stage("pretrain + register", lambda: run("pretrain"))
    fine = stage("fine-tune from backbone", lambda: run("finetune"))
    scratch = stage("fine-tune from random init", lambda: run("finetune-scratch"))

    def pull_and_load():
        ref = f"{cfg.finetuned_name}@candidate"
        out = pull(ref, workdir / "pulled" / cfg.finetuned_name)
        model = load_backbone(ref)
        return out, model

    pulled, model = stage("pull", pull_and_load)
    console.print(f"pulled {cfg.finetuned_name}@candidate to {pulled}; "
                  f"load_backbone -> {type(model).__name__} ({model.num_classes} classes)")
    figures = {
        "curves": {name: _curve(result.run_id, settings) for name, result in
                   (("pretrained", fine), ("scratch", scratch))},
        "pretrain_val_top1": pre.metrics.get("val/top1"),
        "finetune_val_top1": fine.metrics.get("val/top1"),
        "scratch_val_top1": scratch.metrics.get("val/top1"),
        "wall_s": time.perf_counter() - started,
        "timings": timings,
        "backbone": pre.registered,
        "finetuned": fine.registered,
    }
    _print_summary(cfg, figures, settings)
    return figures


def _curve(run_id: str, settings) -> list[float]:
    from hypernym.tracking import client

    history = client(settings.tracking_uri).get_metric_history(run_id, "val/top1")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def _write_recipes(recipes: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, recipe in recipes.items():
        text = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
        (directory / f"{name}.yaml").write_text(text)


def _print_summary(cfg: DemoConfig, f: dict, settings) -> None:
    table = Table(title="hypernym demo: digits val top-1, same fine-tuning budget")
    table.add_column("start")
    for epoch in range(cfg.finetune_epochs):
        table.add_column(f"epoch {epoch + 1}")
    table.add_column("registered model")
    fine, back = f["finetuned"], f["backbone"]
    table.add_row(f"pretrained backbone ({back.name} v{back.version})",
                  *(f"{v:.3f}" for v in f["curves"]["pretrained"]),
                  f"{fine.name} v{fine.version} @{fine.alias}")
    table.add_row("random init", *(f"{v:.3f}" for v in f["curves"]["scratch"]),
                  "(not registered)")
    console.print(table)
    console.print(f"backbone on mini-21K: val top-1 {f['pretrain_val_top1']:.3f} "
                  f"({cfg.pretrain_epochs} epochs, {cfg.arch}); registered {back.name} "
                  f"v{back.version} @{back.alias}")
    console.print("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in f["timings"].items())
                  + f"; total {f['wall_s']:.0f}s")
    console.print(f"MLflow UI on these runs: [bold]{settings.mlflow_ui_command()}[/]")
