"""`hypernym distill store`: run a teacher once over a dataset and keep its answers.

For every training image the teacher answers for N views (a crop box and a flip, drawn once and
kept, `hypernym.train.distill.views`); for every image of the other splits, for the evaluation
crop. Of each answer the store keeps the top-K probabilities in fp16 with their class indices and
the mass left over (per semantic level for the semantic losses, with the teacher's confidence),
in one sidecar per dataset shard (`hypernym.train.distill.store_format`).

The work is Ray work over the shards: a pool of actors, one per GPU where the cluster has GPUs
(else one per ``cpus_per_worker`` cores), each loading the teacher once through the registry
(safetensors, sha256 checked) and writing one sidecar per shard it is handed. A sidecar is
written under a temporary name and moved into place, with a record in ``_parts/``: a rerun after
a crash keeps the sidecars that are done (same work, same sha256). ``store.json`` comes last.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass

from hypernym.data.dataset import open_dataset
from hypernym.data.storage import join, open_fs
from hypernym.errors import HypernymError
from hypernym.preflight import Location, check_cluster
from hypernym.progress import ProgressBar
from hypernym.settings import Settings, get_settings
from hypernym.train.distill.store_format import (
    STORE_MANIFEST,
    SidecarInfo,
    StoreManifest,
    write_store_manifest,
)
from hypernym.train.distill.teach import PARTS_DIR, ShardJob, StoreWorker
from hypernym.train.distill.teacher import TeacherSpec, resolve_teacher

__all__ = ["StorePlan", "write_store"]


@dataclass(frozen=True)
class StorePlan:
    """What every actor needs to answer for a shard (picklable).

    Attributes:
        kind: ``flat`` (one level, every class) or ``semantic`` (the semantic levels).
        levels: each level's class indices; topk: the probabilities kept per level.
        img_size: the teacher's input side; crop_scale: the views' RandomResizedCrop scale.
        batch_size: views per teacher forward.
    """

    teacher: TeacherSpec
    kind: str
    levels: list[list[int]]
    topk: list[int]
    views: int
    img_size: int
    crop_scale: tuple[float, float]
    seed: int
    batch_size: int
    threads: int
    out: str
    num_classes: int

    @property
    def class_dtype(self) -> str:
        return "uint16" if self.num_classes <= 65536 else "int32"

    def digest(self, shard_sha256: str, split: str) -> str:
        """What a sidecar is made of: a rerun keeps it only if this matches."""
        payload = json.dumps([self.teacher.sha256, self.teacher.order, self.kind, self.levels,
                              self.topk, self.views, self.img_size, list(self.crop_scale),
                              self.seed, shard_sha256, split])
        return hashlib.sha256(payload.encode()).hexdigest()


def write_store(teacher: str, dataset: str, *, out: str, views: int, topk: int,
                loss: str = "kl", img_size: int | None = None,
                crop_scale: tuple[float, float] = (0.08, 1.0), seed: int = 0,
                batch_size: int = 256, cpus_per_worker: int = 1, overwrite: bool = False,
                settings: Settings | None = None, show_progress: bool = True) -> StoreManifest:
    """Write the teacher store of ``teacher`` (a registry reference) on ``dataset``.

    Args:
        out: the store's directory (path or ``s3://``).
        views: augmentation views per training image (N); topk: probabilities kept (K).
        loss: the distillation loss the store is for: ``kl`` keeps one distribution over all
            classes; ``semantic``/``semantic_kl`` one per semantic level with the confidence.
        img_size: the teacher's input side (default: its card's).
        crop_scale: the views' RandomResizedCrop area range; training from the store must use
            the same ``data.crop_scale``.
        seed: with each sample's key, decides its views.
        batch_size: views per teacher forward.
        cpus_per_worker: cores per actor (its decoding threads; CPU actors run the teacher on
            them too).

    Raises:
        HypernymError: a bad argument, a teacher that cannot teach the dataset's classes, an
            existing store without ``overwrite``, locations a multi-node cluster cannot reach.
    """
    from hypernym.train.distill.setup import semantic_levels

    settings = settings or get_settings()
    _check_args(views=views, topk=topk, loss=loss, batch_size=batch_size,
                cpus_per_worker=cpus_per_worker, crop_scale=crop_scale)
    data = open_dataset(dataset)
    check_cluster(settings, _locations(settings, dataset, out))
    spec = resolve_teacher(teacher, data, loss=loss, settings=settings,
                           student=f"a store of dataset {data.name!r}")
    if loss == "kl":
        kind, levels = "flat", [list(range(len(data.classes)))]
    else:
        kind = "semantic"
        levels = [m.tolist() for m in semantic_levels(data.manifest, loss).members]
    fs, path = open_fs(out)
    if fs.exists(join(path, STORE_MANIFEST)):
        if not overwrite:
            raise HypernymError(f"{out} already holds a teacher store: pass --overwrite to "
                                "replace it, or write to another directory")
        fs.rm(join(path, STORE_MANIFEST))  # first: never a finished-looking mix
    fs.makedirs(join(path, PARTS_DIR), exist_ok=True)
    plan = StorePlan(teacher=spec, kind=kind, levels=levels,
                     topk=[min(topk, len(m)) for m in levels], views=views,
                     img_size=img_size or spec.input_size, crop_scale=tuple(crop_scale),
                     seed=seed, batch_size=batch_size, threads=cpus_per_worker, out=out,
                     num_classes=len(data.classes))
    jobs = [ShardJob(split=split, shard=s.name, url=join(data.root, s.name), sha256=s.sha256,
                     digest=plan.digest(s.sha256, split))
            for split, shards in data.manifest.splits.items() for s in shards]
    started = time.perf_counter()
    results, workers = _run(plan, jobs, settings, cpus_per_worker=cpus_per_worker,
                            show_progress=show_progress)
    wall = time.perf_counter() - started
    manifest = _manifest(plan, data, jobs, results, wall=wall, workers=workers)
    write_store_manifest(out, manifest)  # last: only now is this a store
    if fs.exists(join(path, PARTS_DIR)):
        fs.rm(join(path, PARTS_DIR), recursive=True)
    return manifest


def _check_args(*, views, topk, loss, batch_size, cpus_per_worker, crop_scale) -> None:
    problems = [f"--{name.replace('_', '-')} must be at least 1, got {value}"
                for name, value in (("views", views), ("topk", topk),
                                    ("batch_size", batch_size),
                                    ("cpus_per_worker", cpus_per_worker)) if value < 1]
    if loss not in ("kl", "semantic", "semantic_kl"):
        problems.append(f"--loss must be kl, semantic or semantic_kl, got {loss!r}")
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        problems.append(f"--crop-scale must be two fractions 0 < low <= high <= 1, got "
                        f"{list(crop_scale)}")
    if problems:
        raise HypernymError("; ".join(problems))


def _locations(settings: Settings, dataset: str, out: str) -> list[Location]:
    """What the actors touch on whichever node they run: the dataset, the store, the registry."""
    locs = [Location("the dataset", dataset, "DATASET", "s3://BUCKET/DATASET"),
            Location("the teacher store", out, "--out", "s3://BUCKET/STORE"),
            Location("MLflow tracking (the teacher's weights)", settings.tracking_uri,
                     "MLFLOW_TRACKING_URI", "http://TRACKING-SERVER:5000")]
    if settings.artifact_root is not None:
        locs.append(Location("MLflow artifacts", settings.artifact_root,
                             "HYPERNYM_ARTIFACT_ROOT", "s3://BUCKET/mlartifacts"))
    return locs


def _run(plan: StorePlan, jobs: list[ShardJob], settings: Settings, *, cpus_per_worker: int,
         show_progress: bool):
    """Every shard's (SidecarInfo, timings) through a pool of actors; and the pool's size."""
    import ray
    from ray.util import ActorPool

    from hypernym.runtime import ensure_ray

    ensure_ray(settings=settings)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        count, options = gpus, {"num_gpus": 1, "num_cpus": cpus_per_worker}
    else:
        count = max(int(resources.get("CPU", 1)) // cpus_per_worker, 1)
        options = {"num_cpus": cpus_per_worker}
    count = min(count, len(jobs))
    actor = ray.remote(**options)(StoreWorker)
    pool = ActorPool([actor.remote(plan, settings) for _ in range(count)])
    results = {}
    with ProgressBar("distill store", total=len(jobs), unit="shards",
                     enabled=show_progress) as bar:
        for info, timings in pool.map_unordered(lambda a, job: a.run.remote(job), jobs):
            results[info.shard] = (info, timings)
            bar.advance()
    return results, count


def _manifest(plan: StorePlan, data, jobs: list[ShardJob], results, *, wall: float,
              workers: int) -> StoreManifest:
    sidecars: dict[str, list[SidecarInfo]] = {}
    for job in jobs:
        sidecars.setdefault(job.split, []).append(results[job.shard][0])
    train = sidecars.get("train", [])
    train_views = sum(s.samples for s in train) * plan.views
    timings = Counter()
    for _, t in results.values():
        timings.update(t)
    images = sum(s.samples for infos in sidecars.values() for s in infos)
    fingerprint = hashlib.sha256(json.dumps({
        "teacher": plan.teacher.sha256, "dataset": data.fingerprint, "kind": plan.kind,
        "topk": plan.topk, "views": plan.views, "img_size": plan.img_size,
        "crop_scale": list(plan.crop_scale), "seed": plan.seed,
        "sidecars": [(s.name, s.sha256) for infos in sidecars.values() for s in infos],
    }, sort_keys=True).encode()).hexdigest()
    return StoreManifest(
        kind=plan.kind, teacher=plan.teacher.ref, teacher_arch=plan.teacher.arch,
        teacher_sha256=plan.teacher.sha256, teacher_input_size=plan.img_size,
        dataset=data.name, dataset_fingerprint=data.fingerprint,
        num_classes=len(data.classes), levels=plan.levels, topk=plan.topk, views=plan.views,
        crop_scale=plan.crop_scale, seed=plan.seed,
        class_dtype=plan.class_dtype,
        bytes_per_view=round(sum(s.bytes for s in train) / max(train_views, 1), 2),
        sidecars=sidecars,
        stats={"images": images, "views": train_views, "wall_s": round(wall, 2),
               "workers": workers, "cpus_per_worker": plan.threads,
               "images_per_s": round(images / wall, 2) if wall else 0.0,
               **{k: round(v, 2) for k, v in timings.items()}},
        fingerprint=fingerprint)
