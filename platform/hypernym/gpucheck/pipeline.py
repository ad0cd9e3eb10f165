"""The platform's own stages, through the library entries the CLI calls: shards generated and
prepared here (`hypernym prepare`), pretraining on Ray Train with loader and device decode
(`hypernym pretrain`, registering the backbone), a fine-tune of it (`hypernym finetune`,
registered) and its evaluation (`hypernym eval`)."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hypernym.config import parse_recipe
from hypernym.recipes import run_recipe

__all__ = ["BACKBONE", "FINETUNED", "evaluate", "finetune", "make_data", "pretrain",
           "pretrain_device", "pretrain_loader", "raw_jpeg"]

BACKBONE = "gpucheck-backbone"
FINETUNED = "gpucheck-finetuned"


def _classes(n: int) -> list[str]:
    # Made-up synset ids (not in WordNet): a flat hierarchy of n classes
    return [f"n9{i:07d}" for i in range(n)]


def _generate(args: tuple[str, str, int, tuple[int, int]]) -> str:
    from hypernym.data.demo import make_winter21

    out, synset, count, size = args
    make_winter21(out, images_per_class=count, image_size=size, classes=[synset])
    return synset


def make_data(ctx) -> dict[str, Any]:
    """Generated winter21-style tars (one process per CPU), prepared into shards."""
    cfg = ctx.config
    raw, data = ctx.work / "raw", ctx.work / "data"
    began = time.perf_counter()
    jobs = [(str(raw), synset, cfg.images_per_class, tuple(cfg.jpeg_size))
            for synset in _classes(cfg.classes)]
    with ProcessPoolExecutor(max(1, min(cfg.cpus, len(jobs)))) as pool:
        list(pool.map(_generate, jobs))
    generated = time.perf_counter() - began
    recipe = parse_recipe({
        "kind": "prepare", "source": str(raw), "output": str(data), "source_format": "winter21",
        "val_per_class": cfg.val_per_class, "min_per_class": 0, "image_size": cfg.img_size,
        "resize": "squish", "shard_samples": 1000, "overwrite": True}, source="gpu-check")
    began = time.perf_counter()
    manifest = run_recipe(recipe, show_progress=False)
    sizes = [p.stat().st_size for p in sorted(raw.glob("*.tar"))]
    return {"path": str(data), "train": manifest.num_samples("train"),
            "val": manifest.num_samples("val"), "classes": len(manifest.classes),
            "mean_jpeg_bytes": round(sum(sizes) / (cfg.classes * cfg.images_per_class)),
            "generate_s": round(generated, 1), "prepare_s": round(time.perf_counter() - began, 1)}


def _train_recipe(ctx, *, kind: str, name: str, decode_on: str, epochs: int,
                  registry: str | None, backbone: str | None = None,
                  compile_model: bool = True) -> dict[str, Any]:
    cfg = ctx.config
    cuda = ctx.device == "cuda"
    raw = {
        "kind": kind, "name": name, "experiment": "gpu-check",
        "data": {"path": ctx.results["data"]["path"], "img_size": cfg.img_size,
                 "batch_size": cfg.batch_size, "crop_scale": [0.35, 1.0],
                 "loader_workers": cfg.loader_workers, "decode_on": decode_on},
        "model": {"arch": cfg.arch},
        "optim": {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        "train": {"epochs": epochs, "amp": "bf16", "channels_last": True,
                  "compile": cfg.compile and compile_model, "log_every": cfg.log_every,
                  "system_metrics_s": cfg.system_metrics_s},
        "scaling": {"num_workers": 1, "use_gpu": cuda,
                    "cpus_per_worker": max(1, cfg.cpus - 1) if cuda else 1},
        "registry": {"name": registry, "alias": "candidate"},
    }
    if kind == "finetune":
        raw.update(backbone=backbone, mode="full")
    return raw


def pretrain(ctx, *, decode_on: str) -> dict[str, Any]:
    """`hypernym pretrain` on one worker (Ray Train; in the part's process where
    ``ray_train`` is off); the loader-decode run registers the backbone.

    Throughput is the median of the loop's own windows (``train/images_per_s_window``,
    ``train/data_wait_frac_window``) after the first window of each epoch (loader start-up,
    compilation); ``ratio`` sets it against the ceiling of the same step.
    """
    registry = BACKBONE if decode_on == "loader" else None
    raw = _train_recipe(ctx, kind="pretrain", name=f"gpucheck-pretrain-{decode_on}",
                        decode_on=decode_on, epochs=ctx.config.epochs, registry=registry)
    result = run_recipe(parse_recipe(raw, source="gpu-check"), show_progress=False,
                        in_process=not ctx.config.ray_train)
    out = {"run_id": result.run_id, "wall_s": round(result.wall_s, 1),
           "val_top1": result.metrics.get("val/top1"), **_windows(ctx, result.run_id)}
    ceiling = ctx.results.get("ceiling", {})
    best = ceiling.get("compiled" if ctx.config.compile else "eager", {}).get("images_per_s")
    if best and out.get("images_per_s"):
        out["ratio_to_ceiling"] = round(out["images_per_s"] / best, 3)
    if result.registered is not None:
        out["registered"] = f"{result.registered.name}/{result.registered.version}"
    return out


def _windows(ctx, run_id: str) -> dict[str, Any]:
    """Steady-state throughput and data wait from the run's metric history, and which
    system/* metrics MLflow's monitor logged (GPU ones need nvidia-ml-py)."""
    from hypernym.tracking import metric_history, run_summary

    # the three are logged together at every logging step, so their histories line up
    rates, waits, epochs = (metric_history(run_id, key, settings=ctx.settings) for key in (
        "train/images_per_s_window", "train/data_wait_frac_window", "progress/epoch_float"))
    seen: set[int] = set()
    steady = []  # windows after the first of each epoch (loader start-up, compilation)
    for i, epoch_float in enumerate(epochs[:len(rates)]):
        epoch = int(epoch_float - 1e-9)
        if epoch in seen:
            steady.append(i)
        seen.add(epoch)
    steady = steady or list(range(len(rates)))
    keys = sorted(run_summary(run_id, settings=ctx.settings).metrics)
    return {
        "images_per_s": round(statistics.median(rates[i] for i in steady), 1)
        if steady else None,
        "data_wait_frac": round(statistics.median(waits[i] for i in steady), 3)
        if steady else None,
        "windows": len(steady),
        "system_metrics": [k for k in keys if k.startswith("system/")],
    }


def finetune(ctx) -> dict[str, Any]:
    """`hypernym finetune` from the registered backbone (full fine-tune, one epoch), registered."""
    backbone = ctx.results["pretrain_loader"]["registered"]
    raw = _train_recipe(ctx, kind="finetune", name="gpucheck-finetune", decode_on="loader",
                        epochs=1, registry=FINETUNED, backbone=backbone, compile_model=False)
    result = run_recipe(parse_recipe(raw, source="gpu-check"), show_progress=False,
                        in_process=not ctx.config.ray_train)
    out = {"run_id": result.run_id, "wall_s": round(result.wall_s, 1),
           "backbone": backbone, "val_top1": result.metrics.get("val/top1")}
    if result.registered is not None:
        out["registered"] = f"{result.registered.name}/{result.registered.version}"
    return out


def evaluate(ctx) -> dict[str, Any]:
    """`hypernym eval` of the fine-tuned model on the val split (on the GPU when there is one)."""
    from hypernym.transfer.evaluation import run_eval

    ref = ctx.results["finetune"]["registered"]
    began = time.perf_counter()
    report, run_id = run_eval(ref, ctx.results["data"]["path"], split="val",
                              batch_size=ctx.config.batch_size, experiment="gpu-check")
    return {"model": ref, "run_id": run_id, "seconds": round(time.perf_counter() - began, 1),
            "samples": report.samples, "top1": round(report.top1, 4),
            "top5": round(report.top5, 4), "ece": round(report.calibration["ece"], 4)}


def raw_jpeg(ctx) -> bytes:
    """One generated JPEG (the serving part posts it)."""
    import tarfile

    tar_path = next(iter(sorted(Path(ctx.work, "raw").glob("*.tar"))))
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar if m.isfile())
        return tar.extractfile(member).read()


def pretrain_loader(ctx) -> dict[str, Any]:
    """`pretrain` with ``data.decode_on: loader`` (registers the backbone)."""
    return pretrain(ctx, decode_on="loader")


def pretrain_device(ctx) -> dict[str, Any]:
    """`pretrain` with ``data.decode_on: device`` (nvJPEG on a GPU)."""
    return pretrain(ctx, decode_on="device")
