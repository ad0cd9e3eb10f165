"""The distillation demo (``examples/distill.py``): a large teacher, a small student, on the
generated glyphs, at a CPU budget.

generate the glyph mini-21K (`hypernym.data.demo`) -> prepare -> pretrain the teacher (a larger
timm model, longer) and register it -> write its teacher store (`hypernym distill store`) ->
for every seed, train the same small student three ways at the same budget: without a teacher,
distilled online, distilled from the store -> the student's top-1 on the held-out split, mean
over the seeds. Each stage is the library call the CLI makes; the students train in this process
(`run_training(in_process=True)`: the same core, MLflow run and registration as on Ray Train).
The distilled students of the first seed are registered, with their teacher in their lineage.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from hypernym.config import parse_recipe
from hypernym.settings import get_settings

__all__ = ["DistillDemoConfig", "run_distill_demo"]

console = Console(stderr=True, soft_wrap=True)
MODES = ("no teacher", "online", "store")


class DistillDemoConfig(BaseModel):
    """The distillation demo's knobs (``examples/distill.py --set key=value``)."""

    model_config = ConfigDict(extra="forbid")

    images_per_class: int = Field(40, ge=10)
    val_per_class: int = Field(10, ge=1, description="held-out images per class")
    img_size: int = Field(32, ge=16)
    teacher_arch: str = "resnet10t"
    teacher_epochs: int = Field(8, ge=1)
    student_arch: str = "test_resnet"
    student_epochs: int = Field(4, ge=1)
    seeds: int = Field(3, ge=1, description="student seeds (init and data order): 0..seeds-1")
    batch_size: int = Field(32, ge=2)
    loss: Literal["kl", "semantic", "semantic_kl"] = Field("kl",
                                                           description="train.distill.loss")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.1, ge=0, lt=1)
    views: int = Field(4, ge=1, description="stored views per training image")
    topk: int = Field(5, ge=1, description="stored probabilities per view")


def recipes(cfg: DistillDemoConfig, workdir: Path) -> dict[str, dict]:
    """The demo's recipes as raw mappings (the students' per seed and mode)."""
    data = str(workdir / "data" / "glyphs")
    common = {"experiment": "hypernym-distill-demo", "scaling": {"num_workers": 1}}
    loader = {"path": data, "img_size": cfg.img_size, "batch_size": cfg.batch_size,
              "crop_scale": [0.35, 1.0]}
    out = {
        "prepare": {"kind": "prepare", "source": str(workdir / "raw"), "output": data,
                    "source_format": "winter21", "val_per_class": cfg.val_per_class,
                    "min_per_class": 0, "image_size": int(cfg.img_size * 1.15),
                    "resize": "shorter", "shard_samples": 256, "overwrite": True},
        "teacher": {**common, "kind": "pretrain", "name": "distill-teacher",
                    "data": {**loader, "seed": 100}, "model": {"arch": cfg.teacher_arch},
                    "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.05,
                              "warmup_epochs": 1},
                    "train": {"epochs": cfg.teacher_epochs, "log_every": 20},
                    "registry": {"name": "hypernym-distill-teacher", "alias": "candidate"}},
    }
    distill = {"loss": cfg.loss, "temperature": cfg.temperature, "alpha": cfg.alpha}
    sources = {"no teacher": None,
               "online": {**distill, "teacher": "hypernym-distill-teacher@candidate"},
               "store": {**distill, "store": str(workdir / "data" / "glyphs-store")}}
    for seed in range(cfg.seeds):
        for mode, source in sources.items():
            name = f"student-{mode.replace(' ', '-')}-{seed}"
            register = seed == 0 and source is not None
            out[name] = {
                **common, "kind": "pretrain", "name": name, "data": {**loader, "seed": seed},
                "model": {"arch": cfg.student_arch},
                "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 0},
                "train": {"epochs": cfg.student_epochs, "log_every": 20,
                          **({"distill": source} if source else {})},
                "registry": {"name": f"hypernym-distill-{mode}" if register else None}}
    return out


def run_distill_demo(cfg: DistillDemoConfig, *, workdir: Path | None = None) -> dict:
    """Run every stage, print the table; the figures (also written to ``summary.json``)."""
    from hypernym.data.demo import DEMO_CLASSES, make_winter21
    from hypernym.recipes import run_recipe
    from hypernym.train.distill.store_job import write_store

    settings = get_settings()
    workdir = (workdir or settings.home / "distill-demo").resolve()
    raw = recipes(cfg, workdir)
    parsed = {name: parse_recipe(r, source=f"distill demo recipe {name}")
              for name, r in raw.items()}
    started, timings = time.perf_counter(), {}

    def stage(title: str, fn):
        console.rule(f"[bold cyan]{title}")
        t0 = time.perf_counter()
        result = fn()
        timings[title] = round(time.perf_counter() - t0, 1)
        return result

    side = int(cfg.img_size * 1.25)
    stage("generate + prepare", lambda: (
        make_winter21(workdir / "raw", images_per_class=cfg.images_per_class,
                      image_size=(side, side), classes=DEMO_CLASSES),
        run_recipe(parsed["prepare"], show_progress=False)))
    teacher = stage("teacher", lambda: run_recipe(parsed["teacher"], in_process=True,
                                                  show_progress=False))
    console.print(f"teacher {cfg.teacher_arch}: val top-1 {teacher.metrics['val/top1']:.3f}")
    store = stage("teacher store", lambda: write_store(
        "hypernym-distill-teacher@candidate", str(workdir / "data" / "glyphs"),
        out=str(workdir / "data" / "glyphs-store"), views=cfg.views, topk=cfg.topk,
        loss="kl" if cfg.loss == "kl" else "semantic", crop_scale=(0.35, 1.0),
        overwrite=True, show_progress=False))
    top1: dict[str, list[float]] = {mode: [] for mode in MODES}
    for seed in range(cfg.seeds):
        for mode in MODES:
            name = f"student-{mode.replace(' ', '-')}-{seed}"
            result = stage(name, lambda n=name: run_recipe(parsed[n], in_process=True,
                                                           show_progress=False))
            top1[mode].append(result.metrics["val/top1"])
            console.print(f"{name}: val top-1 {top1[mode][-1]:.3f}")
    figures = {"top1": top1, "teacher_top1": teacher.metrics["val/top1"],
               "lead": {mode: round(100 * (statistics.fmean(top1[mode])
                                           - statistics.fmean(top1["no teacher"])), 2)
                        for mode in MODES[1:]},
               "seed_leads": {mode: [round(100 * (a - b), 2) for a, b in
                                     zip(top1[mode], top1["no teacher"], strict=True)]
                              for mode in MODES[1:]},
               "store": {"bytes_per_view": store.bytes_per_view, **store.stats},
               "stage_seconds": timings, "wall_s": round(time.perf_counter() - started, 1),
               "config": cfg.model_dump()}
    _print(cfg, figures)
    tmp = workdir / ".summary.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2))
    os.replace(tmp, workdir / "summary.json")
    return figures


def _print(cfg: DistillDemoConfig, f: dict) -> None:
    table = Table(title=f"distillation demo: {cfg.student_arch} student, held-out top-1 after "
                        f"{cfg.student_epochs} epochs (mean ± std over {cfg.seeds} seeds)")
    for column in ("student", "val top-1", "lead over no teacher (points)", "per seed"):
        table.add_column(column)
    for mode in MODES:
        values = f["top1"][mode]
        spread = (f" ± {statistics.pstdev(values):.3f}" if len(values) > 1 else "")
        lead = f"{f['lead'][mode]:+.1f}" if mode in f["lead"] else ""
        seeds = ", ".join(f"{v:+.1f}" for v in f["seed_leads"].get(mode, []))
        table.add_row(mode, f"{statistics.fmean(values):.3f}{spread}", lead, seeds)
    console.print(table)
    console.print(f"teacher {cfg.teacher_arch} ({cfg.teacher_epochs} epochs): val top-1 "
                  f"{f['teacher_top1']:.3f}; store: {cfg.views} views x top-{cfg.topk}, "
                  f"{f['store']['bytes_per_view']:.1f} bytes per view")
    console.print("stage times: " + ", ".join(f"{k} {v:.0f}s"
                                              for k, v in f["stage_seconds"].items())
                  + f"; total {f['wall_s']:.0f}s")
