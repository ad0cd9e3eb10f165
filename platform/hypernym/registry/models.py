"""Registered models: register, resolve, pull, and load into timm without unpickling.

A registered version is an MLflow "models from code" pyfunc (pyfunc_model.py, a plain file) whose
artifacts are ``model.safetensors`` and ``card.json``: weights are data, not code
(docs/architecture.md, "Principles"). References:
``NAME`` (newest version), ``NAME@alias``, ``NAME/VERSION``, each optionally ``models:/``-prefixed.
"""

from __future__ import annotations

import difflib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hypernym.errors import HypernymError
from hypernym.registry.card import CARD_FILE, WEIGHTS_FILE, ModelCard
from hypernym.settings import Settings, get_settings
from hypernym.tracking import client, mlflow_module, tracking_uri

__all__ = [
    "ModelRef",
    "RegisteredModel",
    "list_registered",
    "load_backbone",
    "load_card",
    "parse_ref",
    "pull",
    "register_model",
    "resolve",
]

_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@:]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))?$")
_FORMS = "NAME, NAME@alias, NAME/VERSION (optionally prefixed with models:/)"
# What the pyfunc needs to load anywhere; explicit, so MLflow does not infer (slow, noisy).
_PIP = ["torch", "timm", "safetensors", "numpy"]


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: int
    alias: str | None
    uri: str


def parse_ref(ref: str) -> ModelRef:
    match = _REF.match(ref.strip())
    if not match:
        raise HypernymError(f"bad model reference {ref!r}: use {_FORMS}")
    version = match["version"]
    return ModelRef(match["name"], match["alias"], int(version) if version else None)


def register_model(*, run_id: str, name: str, model: torch.nn.Module, card: ModelCard,
                   alias: str | None = None, settings: Settings | None = None) -> RegisteredModel:
    """Log ``model`` with ``run_id`` as safetensors + card, and register it as a new version."""
    from safetensors.torch import save_file

    settings = settings or get_settings()
    mlflow = mlflow_module()
    with tempfile.TemporaryDirectory() as tmp, tracking_uri(settings.tracking_uri):
        weights, card_path = Path(tmp) / WEIGHTS_FILE, Path(tmp) / CARD_FILE
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(weights))
        card_path.write_text(card.model_dump_json(indent=2))
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"weights": str(weights), "card": str(card_path)},
                pip_requirements=_PIP,
            )
        c = client(settings.tracking_uri)
        # The client API rather than mlflow.register_model, which prints to stderr every call.
        if not c.search_registered_models(filter_string=f"name='{name}'"):
            c.create_registered_model(name, description=f"{card.task} of timm {card.arch}")
        version = c.create_model_version(name=name, source=info.model_uri, run_id=run_id,
                                         tags=_lineage_tags(card), await_creation_for=0,
                                         model_id=info.model_id)
    if alias:
        c.set_registered_model_alias(name, alias, version.version)
    return RegisteredModel(name=name, version=int(version.version), alias=alias,
                           uri=f"models:/{name}/{version.version}")


def _lineage_tags(card: ModelCard) -> dict[str, str]:
    return {
        "run_id": card.run_id or "",
        "dataset_fingerprint": str(card.dataset.get("fingerprint", "")),
        "dataset_uri": str(card.dataset.get("uri", "")),
        "arch": card.arch,
        "task": card.task,
        "parent": card.parent or "",
        "weights": card.weights,
        "epoch": str(card.selected.get("epoch", "")),  # which epoch of the run these weights are
    }


def resolve(ref: str, *, settings: Settings | None = None):
    """The MLflow ModelVersion a reference points at, or a HypernymError saying what exists."""
    MlflowException = mlflow_module().exceptions.MlflowException  # noqa: N806

    settings = settings or get_settings()
    parsed = parse_ref(ref)
    c = client(settings.tracking_uri)
    try:
        c.get_registered_model(parsed.name)
    except MlflowException:
        names = [m.name for m in c.search_registered_models()]
        close = difflib.get_close_matches(parsed.name, names, n=3)
        hint = (f"did you mean {', '.join(close)}?" if close else
                f"registered: {', '.join(names)}" if names else
                "the registry is empty: run `hypernym pretrain` with registry.name set")
        raise HypernymError(f"no registered model {parsed.name!r} at {settings.tracking_uri}; "
                            f"{hint}") from None
    try:
        if parsed.alias:
            return c.get_model_version_by_alias(parsed.name, parsed.alias)
        if parsed.version is not None:
            return c.get_model_version(parsed.name, str(parsed.version))
    except MlflowException:
        model = c.get_registered_model(parsed.name)
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{parsed.name}'"))
        raise HypernymError(
            f"{ref}: no such {'alias' if parsed.alias else 'version'}; {parsed.name} has "
            f"versions {versions} and aliases {sorted(model.aliases) or 'none'}"
        ) from None
    versions = c.search_model_versions(f"name='{parsed.name}'")
    return max(versions, key=lambda v: int(v.version))


def pull(ref: str, out_dir: str | Path, *, settings: Settings | None = None) -> Path:
    """Download a version's ``model.safetensors`` and ``card.json`` into ``out_dir``."""
    settings = settings or get_settings()
    version = resolve(ref, settings=settings)
    mlflow = mlflow_module()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"models:/{version.name}/{version.version}/artifacts"
    for attempt in range(3):  # a freshly registered version may be a moment from READY
        try:
            with tempfile.TemporaryDirectory() as tmp, tracking_uri(settings.tracking_uri):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                for name in (WEIGHTS_FILE, CARD_FILE):
                    (out / name).write_bytes((local / name).read_bytes())
            return out
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1)
    return out


def load_card(ref: str, *, settings: Settings | None = None) -> ModelCard:
    with tempfile.TemporaryDirectory() as tmp:
        return ModelCard.model_validate_json((pull(ref, tmp, settings=settings) / CARD_FILE)
                                             .read_text())


def load_backbone(ref: str, num_classes: int | None = None, *,
                  settings: Settings | None = None, **timm_kwargs) -> torch.nn.Module:
    """A timm model with the registered weights (safetensors only: nothing is unpickled).

    Args:
        ref: NAME, NAME@alias or NAME/VERSION.
        num_classes: a new classifier width (timm's ``reset_classifier``); 0 gives pooled
            features; None keeps the registered head.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``).
    """
    import timm
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        local = pull(ref, tmp, settings=settings)
        card = ModelCard.model_validate_json((local / CARD_FILE).read_text())
        model = timm.create_model(card.arch, pretrained=False, num_classes=card.num_classes,
                                  **timm_kwargs)
        model.load_state_dict(load_file(str(local / WEIGHTS_FILE)))
    if num_classes is not None and num_classes != card.num_classes:
        model.reset_classifier(num_classes)
    # timm.data.resolve_data_config reads these: preprocessing travels with the weights.
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "input_size":
                            tuple(card.input_size), "mean": tuple(card.mean),
                            "std": tuple(card.std)}
    model.hypernym_card = card
    return model


def list_registered(*, settings: Settings | None = None) -> list[dict]:
    """Every registered model with its newest version, aliases and lineage tags."""
    settings = settings or get_settings()
    c = client(settings.tracking_uri)
    out = []
    for model in c.search_registered_models():
        versions = c.search_model_versions(f"name='{model.name}'")
        newest = max(versions, key=lambda v: int(v.version)) if versions else None
        out.append({"name": model.name, "versions": len(versions),
                    "latest": int(newest.version) if newest else None,
                    "aliases": dict(model.aliases),
                    "tags": dict(newest.tags) if newest else {}})
    return out
