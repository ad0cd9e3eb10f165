"""`hypernym distill store TEACHER DATASET --views N --topk K`: write a teacher store.

Thin over `hypernym.train.distill.store_job.write_store`; training replays the store with
``train.distill.store: PATH`` (docs/distillation.md).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

__all__ = ["distill_app"]

distill_app = typer.Typer(no_args_is_help=True)
out = Console(stderr=True, soft_wrap=True)


@distill_app.command()
def store(
    teacher: Annotated[str, typer.Argument(help="the teacher: NAME, NAME@alias, NAME/VERSION")],
    dataset: Annotated[str, typer.Argument(help="a prepared dataset (path or s3://)")],
    views: Annotated[int, typer.Option(min=1, help="augmentation views per training image")],
    topk: Annotated[int, typer.Option(min=1, help="teacher probabilities kept per view "
                                      "(per semantic level for the semantic losses)")],
    out_dir: Annotated[str | None, typer.Option(
        "--out", help="the store's directory (path or s3://); default: DATASET-store-NAME-vN "
        "beside the dataset")] = None,
    loss: Annotated[str, typer.Option(help="kl: one distribution over all classes; semantic "
                                      "or semantic_kl: one per semantic level, with the "
                                      "teacher's confidence")] = "kl",
    img_size: Annotated[int | None, typer.Option(
        min=8, help="the teacher's input side; default: its card's")] = None,
    crop_scale: Annotated[tuple[float, float], typer.Option(
        help="RandomResizedCrop area range of the views (training uses the same "
        "data.crop_scale)")] = (0.08, 1.0),
    seed: Annotated[int, typer.Option(help="with each sample's key, decides its views")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="views per teacher forward")] = 256,
    cpus_per_worker: Annotated[int, typer.Option(
        min=1, help="cores per actor (one actor per GPU, else per this many cores)")] = 1,
    overwrite: Annotated[bool, typer.Option(help="replace a store already there")] = False,
) -> None:
    """Run a registered teacher once over DATASET's shards (Ray work, GPU where there is one)
    and store its top-K answers for N views of every training image."""
    from hypernym.registry.models import resolve
    from hypernym.train.distill.store_job import write_store

    if out_dir is None:
        version = resolve(teacher)
        out_dir = f"{dataset.rstrip('/')}-store-{version.name}-v{version.version}"
    manifest = write_store(teacher, dataset, out=out_dir, views=views, topk=topk, loss=loss,
                           img_size=img_size, crop_scale=crop_scale, seed=seed,
                           batch_size=batch_size, cpus_per_worker=cpus_per_worker,
                           overwrite=overwrite)
    stats = manifest.stats
    out.print(f"[green]teacher store ready[/] {out_dir}: {manifest.teacher} "
              f"({manifest.teacher_arch}) on {manifest.dataset}, {manifest.kind} soft labels, "
              f"{manifest.views} views x top-{max(manifest.topk)}")
    out.print(f"{int(stats.get('images', 0)):,} images in {stats.get('wall_s', 0):.1f} s "
              f"({stats.get('images_per_s', 0):.1f} images/s on {int(stats.get('workers', 0))} "
              f"workers); {manifest.bytes_per_view:.1f} bytes per view; fingerprint "
              f"{manifest.fingerprint[:12]}")
    out.print(f"train from it: --set train.distill.store={out_dir}")
