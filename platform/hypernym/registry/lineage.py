"""Where a registered model came from, read from MLflow alone.

The chain, oldest first: dataset -> pretrain run -> backbone version -> fine-tune run(s) (each
with its own dataset) -> model version. Each version names its run and its parent backbone in
its tags; each run holds its recipe (params), metrics, status and dataset input (name,
fingerprint, URI); each version's card (an MLflow artifact) adds the dataset's images per
split, prepare recipe and excluded subtrees.
"""

from __future__ import annotations

import json
from typing import Any

from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings

__all__ = ["lineage"]

_RECIPE_KEYS = ("name", "kind", "model.arch", "backbone", "mode", "train.epochs", "train.loss",
                "optim.opt", "optim.lr", "data.batch_size", "data.img_size",
                "scaling.num_workers", "registry.select")
_MAX_DEPTH = 20  # a parent chain longer than this is a cycle
_TEACHER_KEYS = ("teacher", "teacher_arch", "teacher_sha256", "distill_loss", "distill_alpha",
                 "distill_temperature", "distill_store", "distill_store_fingerprint")


def lineage(ref: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """``{"ref", "chain": [dataset, run, model_version, ...]}``, oldest first.

    Raises:
        HypernymError: the reference does not resolve, or a parent link is broken.
    """
    settings = settings or get_settings()
    chain: list[dict[str, Any]] = []
    current: str | None = ref
    seen: set[str] = set()
    while current:
        if current in seen or len(seen) >= _MAX_DEPTH:
            raise HypernymError(f"the parent chain of {ref} loops at {current}")
        seen.add(current)
        version_node, run_node, dataset_node, parent = _links(current, settings)
        chain[:0] = [n for n in (dataset_node, run_node, version_node) if n]
        current = parent
    return {"ref": ref, "chain": chain}


def _links(ref: str, settings: Settings):
    from hypernym.registry.models import fetch_card, resolve
    from hypernym.tracking._backend import client

    version = resolve(ref, settings=settings)
    registered = client(settings.tracking_uri).get_registered_model(version.name)
    tags = dict(version.tags)
    card = None
    try:
        card = fetch_card(f"{version.name}/{version.version}", settings=settings)
    except HypernymError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable card still leaves the tags to show
        card = None
    node = {"kind": "model_version", "name": version.name, "version": int(version.version),
            "aliases": sorted(a for a, v in registered.aliases.items()
                              if str(v) == str(version.version)),
            "status": version.status, "task": tags.get("task"), "arch": tags.get("arch"),
            "weights": tags.get("weights"), "epoch": tags.get("epoch"),
            "weights_sha256": tags.get("weights_sha256"), "parent": tags.get("parent") or None,
            "run_id": version.run_id}
    if tags.get("teacher"):  # a distilled model: its teacher and, offline, the store
        node["teacher"] = {k: tags[k] for k in _TEACHER_KEYS if tags.get(k)}
    run_node, dataset_node = None, None
    if version.run_id:
        run_node, dataset_node = _run(version.run_id, card, settings)
    return node, run_node, dataset_node, node["parent"]


def _run(run_id: str, card, settings: Settings
         ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from hypernym.tracking import run_summary

    try:
        run = run_summary(run_id, settings=settings)
    except HypernymError:
        return {"kind": "run", "run_id": run_id, "status": "DELETED or unknown"}, None
    node = {"kind": "run", "run_id": run_id, "name": run.name,
            "task": run.tags.get("hypernym.kind"), "status": run.status,
            "recipe": {k: run.params[k] for k in _RECIPE_KEYS if k in run.params},
            "metrics": {k: round(v, 6) for k, v in sorted(run.metrics.items())
                        if k.startswith(("val", "train/loss", "epoch"))},
            "git_commit": run.tags.get("mlflow.source.git.commit") or None}
    dataset = None
    for item in run.datasets:
        source = _json(item.source)
        dataset = {"kind": "dataset", "name": item.name,
                   "fingerprint": source.get("fingerprint", item.digest),
                   "uri": source.get("uri", "")}
    if card is not None:
        info = card.dataset
        dataset = dataset or {"kind": "dataset", "name": info.get("name"),
                              "fingerprint": info.get("fingerprint"), "uri": info.get("uri")}
        dataset.update(images=info.get("images", {}), recipe=info.get("recipe", {}),
                       excluded_subtrees=info.get("excluded_subtrees", []),
                       classes=card.num_classes, hierarchy=card.hierarchy.get("kind", "flat"))
    return node, dataset


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
