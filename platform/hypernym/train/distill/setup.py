"""Checking a recipe's ``train.distill`` in the driver, before an MLflow run or Ray work.

Everything that can be wrong with a distillation is found here: a base task that is not
single-label classification, a teacher whose classes or hierarchy are not the student's, a
semantic loss on classes without a hierarchy, a store written for another dataset, teacher or
loss, recipe settings the store cannot replay, a store a cluster's nodes cannot reach.
"""

from __future__ import annotations

from typing import Any

from hypernym.errors import HypernymError
from hypernym.preflight import Location, check_cluster
from hypernym.settings import get_settings
from hypernym.train.distill.losses import DistillLoss
from hypernym.train.distill.store_format import StoreManifest, read_store_manifest
from hypernym.train.distill.teacher import resolve_teacher
from hypernym.train.losses import SemanticSoftmax

__all__ = ["check_recipe", "semantic_levels"]


def check_recipe(recipe, dataset, *, base) -> dict[str, Any]:
    """The keyword arguments of `hypernym.train.tasks.distill.DistillTask` for ``recipe``.

    Raises:
        HypernymError: naming what is wrong and how to fix it (see the module docstring).
    """
    from hypernym.train.tasks.classification import ClassificationTask

    spec, settings = recipe.train.distill, get_settings()
    student = f"the student (recipe {recipe.name!r}, timm {recipe.model.arch})"
    if not isinstance(base, ClassificationTask):
        raise HypernymError(f"train.distill distils single-label classifiers; the recipe's "
                            f"task {base.name!r} is not one")
    levels = semantic_levels(dataset.manifest, spec.loss) if spec.loss != "kl" else None
    loss = DistillLoss(spec.loss, temperature=spec.temperature, levels=levels)
    out: dict[str, Any] = {
        "loss": loss, "alpha": spec.alpha, "settings": settings,
        "student": {"img_size": recipe.data.img_size, "mean": recipe.data.mean,
                    "std": recipe.data.std, "channels_last": recipe.train.channels_last,
                    "seed": recipe.data.seed, "shuffle_buffer": recipe.data.shuffle_buffer}}
    if spec.store is None:
        out["teacher"] = resolve_teacher(spec.teacher, dataset, loss=spec.loss,
                                         student=student, settings=settings)
        return out
    manifest = check_store(spec, recipe, dataset)
    if spec.teacher is not None:
        teacher = resolve_teacher(spec.teacher, dataset, loss=spec.loss, student=student,
                                  settings=settings)
        if (teacher.ref, teacher.sha256) != (manifest.teacher, manifest.teacher_sha256):
            raise HypernymError(
                f"train.distill.teacher {spec.teacher} is {teacher.ref}, but the store "
                f"{spec.store} holds the answers of {manifest.teacher} (sha256 "
                f"{manifest.teacher_sha256[:12]}): drop train.distill.teacher, or write a store "
                "of this teacher")
    check_cluster(settings, [Location("the teacher store", spec.store, "train.distill.store",
                                      "s3://BUCKET/STORE")])
    out.update(store=spec.store, store_manifest=manifest)
    return out


def check_store(spec, recipe, dataset) -> StoreManifest:
    """The store's manifest, once it is known to fit the recipe.

    Raises:
        HypernymError: no finished store; another dataset; a store of the other kind than the
            loss needs; ``data.crop_scale`` other than the store's; ``data.rand_augment``.
    """
    manifest = read_store_manifest(spec.store)
    where = f"the teacher store {spec.store}"
    if manifest.dataset_fingerprint != dataset.fingerprint:
        raise HypernymError(
            f"{where} was written for dataset {manifest.dataset!r} (fingerprint "
            f"{manifest.dataset_fingerprint[:12]}), not {dataset.name!r} at "
            f"{recipe.data.path} ({dataset.fingerprint[:12]}): write a store for this dataset")
    needs = "flat" if spec.loss == "kl" else "semantic"
    if manifest.kind != needs:
        raise HypernymError(
            f"{where} holds {manifest.kind} soft labels, but train.distill.loss "
            f"{spec.loss} needs {needs} ones: write the store with --loss "
            f"{'kl' if needs == 'flat' else 'semantic'}")
    if tuple(recipe.data.crop_scale) != tuple(manifest.crop_scale):
        raise HypernymError(
            f"{where} holds crops drawn with crop_scale {list(manifest.crop_scale)}; training "
            f"replays them, so data.crop_scale {list(recipe.data.crop_scale)} would not apply: "
            f"set data.crop_scale to {list(manifest.crop_scale)}, or write a store with "
            "--crop-scale")
    if recipe.data.rand_augment is not None:
        raise HypernymError(
            f"data.rand_augment would change the images after the teacher answered for them; "
            f"{where} has no RandAugment views: drop data.rand_augment, or distil online "
            "(train.distill.teacher)")
    return manifest


def semantic_levels(manifest, loss: str) -> SemanticSoftmax:
    """The dataset's semantic softmax, whose levels the semantic losses compare.

    Raises:
        HypernymError: the dataset's classes form no hierarchy.
    """
    try:
        return SemanticSoftmax.from_manifest(manifest)
    except HypernymError as exc:
        raise HypernymError(f"train.distill.loss {loss} compares the teacher and the student "
                            f"level by level, but: {exc}. Use train.distill.loss: kl") from None
