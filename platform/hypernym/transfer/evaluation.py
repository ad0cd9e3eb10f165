"""Evaluating a classifier on a prepared split: `predict_split` runs it over the split,
`run_eval` (``hypernym eval``: its own MLflow run, linked to the model) and `report_finetune`
(the end of a fine-tune, into the fine-tune's run) turn its scores into the evaluation report
(`hypernym.transfer.eval_report`). A multi-label model (card ``objective: multilabel``) gets the
multi-label report (`hypernym.transfer.multilabel_report`)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from hypernym.data.manifest import Manifest
from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings
from hypernym.transfer.eval_report import (
    Report,
    build_report,
    check_classes,
    log_report,
    start_eval_run,
)

__all__ = ["predict_split", "print_any_report", "report_finetune", "run_eval"]

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_split(model: torch.nn.Module, manifest: Manifest, root: str, *, split: str = "val",
                  img_size: int, mean, std, batch_size: int = 64, num_workers: int = 0,
                  device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, softmax scores) of ``model`` over the whole ``split`` of the dataset at ``root``:
    the project's reader in eval mode (resize to ``img_size`` and a center crop), normalised with
    ``mean`` and ``std`` (`hypernym.data.normalize`), one pass without gradients.

    Raises:
        HypernymError: the split does not exist or is empty, or the model's classifier does not
            have one output per class of the dataset.
    """
    from hypernym.data.normalize import normalizer
    from hypernym.data.reader import make_loader

    if manifest.num_samples(split) == 0:
        raise HypernymError(f"dataset {manifest.name!r} has no samples in split {split!r}; its "
                            f"splits: {', '.join(manifest.splits) or 'none'}")
    outputs = getattr(model, "num_classes", None)
    if outputs is not None and outputs != len(manifest.classes):
        raise HypernymError(f"the model has {outputs} outputs but dataset {manifest.name!r} has "
                            f"{len(manifest.classes)} classes: evaluate it on the dataset it was "
                            "trained (fine-tuned) for")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(dev).eval()
    normalize = normalizer(dev, mean, std)
    loader = make_loader(manifest, root, split, rank=0, world_size=1, epoch=0,
                         batch_size=batch_size, img_size=img_size, train=False,
                         num_workers=num_workers)
    labels, scores = [], []
    for batch in loader:
        scores.append(model(normalize(batch[0])).float().softmax(dim=1).cpu())
        labels.append(batch[1])
    return torch.cat(labels).numpy(), torch.cat(scores).numpy()


def run_eval(model_ref: str, dataset: str, *, split: str = "val", batch_size: int = 64,
             experiment: str = "hypernym", contamination: bool = False,
             coco_results: str | None = None,
             settings: Settings | None = None) -> tuple[Report, str]:
    """Evaluate a registered model on a prepared dataset's split in a new MLflow run of kind
    ``eval`` (tags name the model version and the dataset; its inputs link both). A detector
    gets COCO's detection report instead (`hypernym.transfer.detection_eval`).

    Args:
        contamination: also check the split against the pretraining data of the model's
            backbone (its lineage) and put the counts in the report.
        coco_results: a detector's: also write its detections in COCO's result format to
            this file (and the split's ground truth beside it).

    Returns:
        (the report, the eval run's id).

    Raises:
        HypernymError: the model or dataset does not exist, or their classes differ.
    """
    from hypernym import tracking
    from hypernym.data.manifest import read_manifest
    from hypernym.registry.models import fetch_card, load_backbone, resolve

    settings = settings or get_settings()
    version = resolve(model_ref, settings=settings)
    pinned = f"{version.name}/{version.version}"
    card = fetch_card(pinned, settings=settings)
    if card.detection:
        if contamination:
            raise HypernymError("--contamination is for classifiers; check a detector's data "
                                "with `hypernym contamination DATASET --backbone REF`")
        from hypernym.transfer.detection_eval import run_detection_eval

        return run_detection_eval(version, card, dataset, split=split, batch_size=batch_size,
                                  experiment=experiment, coco_results=coco_results,
                                  settings=settings)
    if coco_results:
        raise HypernymError(f"--coco-results writes detections: {pinned} is a classifier")
    manifest = read_manifest(dataset)
    model = load_backbone(pinned, settings=settings)
    card = model.hypernym_card
    check_classes(pinned, card, manifest, dataset)
    run_id = start_eval_run(version, pinned, card, manifest, dataset, split=split,
                            experiment=experiment, settings=settings)
    status = "FAILED"
    try:
        report = _report(model, manifest, dataset, split=split, img_size=card.input_size[-1],
                         mean=card.mean, std=card.std, batch_size=batch_size,
                         thresholds=((card.thresholds or 0.5)
                                     if card.objective == "multilabel" else None))
        report.contamination = _contamination(card, dataset, split, run_id, contamination,
                                              settings)
        _log(report, run_id, settings)
        status = "FINISHED"
        return report, run_id
    finally:
        tracking.end_run(run_id, status, settings=settings)


def _report(model, manifest, root: str, *, split: str, img_size: int, mean, std,
            batch_size: int, thresholds=None):
    """The single-label report, or with ``thresholds`` (one, or one per class) the
    multi-label one."""
    if thresholds is not None:
        from hypernym.transfer.multilabel_report import multilabel_report

        return multilabel_report(model, manifest, root, split=split, img_size=img_size,
                                 mean=mean, std=std, batch_size=batch_size,
                                 thresholds=thresholds)
    labels, probs = predict_split(model, manifest, root, split=split, img_size=img_size,
                                  mean=mean, std=std, batch_size=batch_size)
    return build_report(labels, probs, manifest, split=split)


def _log(report, run_id: str, settings: Settings) -> None:
    from hypernym.transfer.multilabel_report import MultiLabelReport, log_multilabel_report

    if isinstance(report, MultiLabelReport):
        log_multilabel_report(report, run_id, settings=settings)
    else:
        log_report(report, run_id, settings=settings)


def print_any_report(report, console, *, title: str) -> list[str]:
    """Print either kind of report; returns the names of its images in the run."""
    from hypernym.transfer.eval_report import print_report
    from hypernym.transfer.multilabel_report import (
        IMAGES,
        MultiLabelReport,
        print_multilabel_report,
    )

    if isinstance(report, MultiLabelReport):
        print_multilabel_report(report, console, title=title)
        return [f"eval/{name}.png" for name in IMAGES]
    print_report(report, console, title=title)
    return ["eval/confusion_matrix.png", "eval/reliability_diagram.png"]


def _contamination(card, dataset: str, split: str, run_id: str, check: bool,
                   settings: Settings) -> dict | None:
    """Run the check against the backbone's pretraining data, or show what the model's own
    training run logged (``hypernym contamination ... --run``)."""
    from hypernym.tracking import run_summary

    if check:
        from hypernym.transfer.contamination import (
            check_contamination,
            lineage_dataset,
            log_contamination,
        )

        if not card.parent:
            raise HypernymError("the model has no backbone in its lineage (trained from random "
                                "init): nothing to check it against; run `hypernym "
                                "contamination DATASET --against PRETRAIN_DATASET` instead")
        result = check_contamination(dataset, lineage_dataset(card.parent, settings=settings),
                                     splits=(split,))
        log_contamination(result, run_id, settings=settings)
        return {**result.summary(), "examples": result.matches[:10]}
    if card.run_id:
        metrics = run_summary(card.run_id, settings=settings).metrics
        if "contamination/checked" in metrics:
            found = {k: int(metrics[f"contamination/{k}"]) for k in ("checked", "exact", "near")}
            return {**found, "against": "(logged in the model's training run)"}
    return None


def report_finetune(recipe, run_id: str, *, registered=None, checkpoint=None,
                    metrics: dict[str, float] | None = None, dataset=None,
                    settings: Settings | None = None) -> Report | None:
    """The report of a finished fine-tune on its val split, logged into the fine-tune's run.

    Reads the registered weights, or, when nothing was registered, the weights registration
    would have chosen from the final checkpoint (``metrics``: the run's last epoch metrics).
    ``dataset``: the run's dataset, already opened (`hypernym.data.dataset.Dataset`). A
    multi-label model is reported at its card's thresholds (tuned on this same split), or
    unregistered at ``multilabel.threshold``. A failure is logged, not raised: the model is
    trained and registered by then.
    """
    settings = settings or get_settings()
    if getattr(recipe, "task", "classification") == "detection":
        from hypernym.data.dataset import open_dataset
        from hypernym.train.tasks import build_task
        from hypernym.transfer.detection_eval import report_detection_finetune

        dataset = dataset if dataset is not None else open_dataset(recipe.data.path)
        task = build_task(recipe, dataset)
        return report_detection_finetune(recipe, task, run_id, registered=registered,
                                         checkpoint=checkpoint, metrics=metrics,
                                         dataset=dataset, settings=settings)
    try:
        import timm

        from hypernym.data.manifest import read_manifest
        from hypernym.registry.models import load_backbone
        from hypernym.train.checkpoint import load_state
        from hypernym.train.registration import choose_weights, load_weights

        manifest = dataset.manifest if dataset is not None else read_manifest(recipe.data.path)
        if manifest.num_samples("val") == 0:
            log.info("no val split: no evaluation report")
            return None
        if registered is not None:
            model = load_backbone(f"{registered.name}/{registered.version}", settings=settings)
        elif checkpoint is not None:
            model = timm.create_model(recipe.model.arch, num_classes=len(manifest.classes),
                                      **recipe.model.kwargs)
            with checkpoint.as_directory() as ckpt_dir:
                state = load_state(ckpt_dir)
            load_weights(model, choose_weights(recipe, state, metrics or {})[0])
        else:
            return None
        thresholds = None
        if getattr(recipe, "task", "classification") == "multilabel":
            card = getattr(model, "hypernym_card", None)
            thresholds = (card.thresholds if card is not None and card.thresholds
                          else recipe.multilabel.threshold)
        data = recipe.data
        report = _report(model, manifest, data.path, split="val", img_size=data.img_size,
                         mean=data.mean, std=data.std, batch_size=data.batch_size,
                         thresholds=thresholds)
        _log(report, run_id, settings)
        return report
    except Exception as exc:  # noqa: BLE001 - the trained model must not be lost to a report
        log.warning("the evaluation report of run %s failed: %s", run_id, exc, exc_info=True)
        return None
