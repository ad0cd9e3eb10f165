"""`hypernym demo`: the whole pipeline on generated data, on one machine, in a few minutes.

prepare (a miniature winter21 release of generated glyph classes + scikit-learn's digits) ->
pretrain on Ray Train with the semantic softmax -> register -> few-shot rows (a linear probe and
a full fine-tune on 5 digits per class, 3 seeds) -> fine-tune on all digits from the registered
backbone, and from random init with the same budget -> register -> pull. Every Ray stage is the
library function the CLI and submitted jobs call, with a real recipe; the recipes it ran are
written beside the data so each stage can be rerun with `hypernym run`. The closing table sets
every row's pretrained start against random init at the same budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from hypernym.config import parse_recipe
from hypernym.demo.fewshot import FewShotConfig
from hypernym.demo.summary_table import print_summary
from hypernym.recipes import describe, run_recipe
from hypernym.settings import get_settings

__all__ = ["DemoConfig", "demo_recipes", "run_demo"]

console = Console(stderr=True, soft_wrap=True)  # commands stay copy-pastable


class DemoConfig(BaseModel):
    """The demo's knobs (``hypernym demo --set key=value``)."""

    model_config = ConfigDict(extra="forbid")

    images_per_class: int = Field(200, ge=10)
    arch: str = "resnet10t"
    img_size: int = Field(48, ge=16, description="training resolution (the digits are 8x8)")
    pretrain_epochs: int = Field(4, ge=1)
    finetune_epochs: int = Field(2, ge=1, description="epochs of the full-data fine-tune")
    few_shot: FewShotConfig = Field(default_factory=FewShotConfig)
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
            "data": {"path": str(data / "mini21k"), **loader, "crop_scale": [0.25, 1.0]},
            "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 1},
            # the 21K-P semantic softmax: one softmax per level (groups, then their leaves)
            "train": {**common["train"], "epochs": cfg.pretrain_epochs, "loss": "semantic",
                      "label_smoothing": 0.1},
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
    from hypernym.data.demo import DEMO_CLASSES, make_digits_folder, make_winter21
    from hypernym.registry.models import load_backbone, pull
    from hypernym.tracking import metric_history

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

    side = int(cfg.img_size * 1.25)  # what prepare keeps (1.15x): crops have room, no more
    synsets = stage("generate data", lambda: (
        make_winter21(raw / "winter21", images_per_class=cfg.images_per_class,
                      image_size=(side, side), classes=DEMO_CLASSES),
        make_digits_folder(raw / "digits"),
    ))[0]
    console.print(f"miniature winter21: {len(synsets)} synsets of generated glyphs (16 leaves "
                  "under 4 groups, a WordNet subtree); digits: 10 classes")
    stage("prepare", lambda: [run(k) for k in ("prepare-mini21k", "prepare-digits")])
    pre = stage("pretrain + register", lambda: run("pretrain"))
    few = stage("few-shot: probe + fine-tune", lambda: _few_shot(cfg, workdir, settings))
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
        "curves": {name: metric_history(result.run_id, "val/top1", settings=settings)
                   for name, result in (("pretrained", fine), ("scratch", scratch))},
        "pretrain_val_top1": pre.metrics.get("val/top1"),
        "finetune_val_top1": fine.metrics.get("val/top1"),
        "scratch_val_top1": scratch.metrics.get("val/top1"),
        "few_shot": few,
        "wall_s": time.perf_counter() - started,
        "timings": timings,
        "backbone": pre.registered,
        "finetuned": fine.registered,
    }
    print_summary(console, cfg, figures, settings)
    _write_summary(figures, workdir / "summary.json")
    return figures


def _write_summary(f: dict, path: Path) -> None:
    """The table's figures as JSON beside the data (for scripts and tests), written atomically."""
    import json
    import os

    summary = {"few_shot": f["few_shot"], "full_data": f["curves"],
               "pretrain_val_top1": f["pretrain_val_top1"], "stage_seconds": f["timings"],
               "wall_s": f["wall_s"]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)


def _few_shot(cfg: DemoConfig, workdir: Path, settings) -> dict[str, dict[str, list[float]]]:
    """The few-shot rows: the registered backbone against timm's random init, drawn afresh per
    seed."""
    from hypernym.demo.fewshot import few_shot_rows
    from hypernym.registry.models import load_card, resolve

    version = resolve(f"{cfg.backbone_name}@candidate", settings=settings)
    ref = f"{version.name}/{version.version}"  # the same weights for every seed
    card = load_card(ref, settings=settings)
    return few_shot_rows({"pretrained": ref, "random init": None},
                         str(workdir / "data" / "digits"), arch=cfg.arch, img_size=cfg.img_size,
                         mean=card.mean, std=card.std, cfg=cfg.few_shot, settings=settings,
                         log=console.print)


def _write_recipes(recipes: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, recipe in recipes.items():
        text = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
        (directory / f"{name}.yaml").write_text(text)
