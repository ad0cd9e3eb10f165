"""Registered models: register, resolve, pull, and load into timm without unpickling.

A registered version is an MLflow "models from code" pyfunc (pyfunc_model.py, a plain file: images
in, top-k labels out) whose artifacts are ``model.safetensors``, ``card.json`` and a ``README.md``
rendered from the card; nothing is pickled. The card and the version's tags record the weights'
sha256: every pull checks it. References: ``NAME`` (newest version), ``NAME@alias``,
``NAME/VERSION``, each optionally ``models:/``-prefixed.
"""

from __future__ import annotations

import difflib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hypernym.errors import HypernymError
from hypernym.registry.card import CARD_FILE, README_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from hypernym.settings import Settings, get_settings
from hypernym.tracking._backend import client, fluent_uri, mlflow_module

__all__ = [
    "ModelRef",
    "RegisteredModel",
    "list_registered",
    "load_backbone",
    "fetch_card",
    "load_card",
    "parse_ref",
    "pull",
    "register_model",
    "resolve",
    "set_version_tags",
]

_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@:]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))?$")
_FORMS = "NAME, NAME@alias, NAME/VERSION (optionally prefixed with models:/)"
# What the pyfunc needs to load anywhere; explicit, so MLflow does not infer (slow, noisy).
_PIP = ["torch", "torchvision", "timm", "safetensors", "numpy", "pandas", "pillow"]
_READY_TIMEOUT_S = 120
DETECTOR_FILE = "detector_model.py"  # a detector's builder, standalone (pulled beside it)
log = logging.getLogger(__name__)


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
    """Log ``model`` with ``run_id`` as safetensors + card + README, and register a new version.

    The card gets the weights' sha256 (also a version tag, so a card rewritten in the artifact
    store is caught too). The alias moves only once the version is READY: a reader of
    ``NAME@alias`` never sees a version whose files are still being written. Concurrent
    registrations of one name each get their own version.
    """
    from safetensors.torch import save_file

    from hypernym.registry.readme import render_readme
    from hypernym.registry.serving_schema import input_example, signature

    settings = settings or get_settings()
    mlflow = mlflow_module()
    with tempfile.TemporaryDirectory() as tmp, fluent_uri(settings.tracking_uri):
        weights, card_path = Path(tmp) / WEIGHTS_FILE, Path(tmp) / CARD_FILE
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(weights))
        card = card.model_copy(update={"weights_sha256": sha256_file(weights)})
        card_path.write_text(card.model_dump_json(indent=2))
        readme = Path(tmp) / README_FILE
        parent = _parent_card(card.parent, settings)
        readme.write_text(render_readme(card, name=name, parent=parent))
        # A detector's pyfunc needs its builder beside it (plain code, on MLflow's code path).
        code = [str(Path(__file__).with_name(DETECTOR_FILE))] if card.detection else None
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"weights": str(weights), "card": str(card_path),
                           "readme": str(readme)},
                pip_requirements=_PIP,
                signature=signature(card.detection or None,
                                    multi_label=card.objective == "multilabel"),
                input_example=input_example(), metadata={"hypernym_card": "card.json"},
                code_paths=code,
            )
        c = client(settings.tracking_uri)
        _ensure_registered(c, name, description=f"{card.task} of timm {card.arch}")
        tags = {**_lineage_tags(card), "weights_sha256": card.weights_sha256,
                "card_sha256": sha256_file(card_path)}
        version = c.create_model_version(name=name, source=info.model_uri, run_id=run_id,
                                         tags=tags, await_creation_for=0,
                                         model_id=info.model_id,
                                         description=_summary(readme.read_text()))
    _wait_ready(c, name, version.version)
    if alias:
        c.set_registered_model_alias(name, alias, version.version)
    return RegisteredModel(name=name, version=int(version.version), alias=alias,
                           uri=f"models:/{name}/{version.version}")


def set_version_tags(name: str, version: int | str, tags: dict[str, str], *,
                     settings: Settings | None = None) -> None:
    """Set tags on a registered version (e.g. why its weights were chosen); empty values are
    left out."""
    settings = settings or get_settings()
    c = client(settings.tracking_uri)
    for key, value in tags.items():
        if value:
            c.set_model_version_tag(name, str(version), key, str(value))


def _parent_card(parent: str | None, settings: Settings) -> ModelCard | None:
    if not parent:
        return None
    try:
        return fetch_card(parent, settings=settings)
    except HypernymError as exc:  # the README then says less about the backbone
        log.warning("backbone %s: %s", parent, exc)
        return None


def _ensure_registered(c, name: str, *, description: str) -> None:
    """Create the registered model unless it exists; another process may create it first."""
    from mlflow.exceptions import MlflowException

    if c.search_registered_models(filter_string=f"name='{name}'"):
        return
    try:  # the client API rather than mlflow.register_model, which prints to stderr every call
        c.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _wait_ready(c, name: str, version: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while (status := c.get_model_version(name, version).status) != "READY":
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise HypernymError(f"{name} version {version} did not become READY ({status}); "
                                "no alias was moved to it")
        time.sleep(0.5)


def _summary(readme: str, limit: int = 4000) -> str:
    """The README's head as the version description (MLflow's UI renders it as markdown)."""
    head = readme.split("\n## Classes", 1)[0]
    return head if len(head) <= limit else head[: limit - 40] + "\n\n(see README.md)"


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
        # for select: best, the value that chose the epoch (promote compares it)
        "selected_metric": str(card.selected.get("metric", "")),
        "selected_value": str(card.selected.get("value", "")),
        **card.lineage,  # a distilled model's teacher and store
    }


def resolve(ref: str, *, settings: Settings | None = None):
    """The MLflow ModelVersion a reference points at, or a HypernymError saying what exists."""
    from mlflow.exceptions import MlflowException

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
    versions = [v for v in c.search_model_versions(f"name='{parsed.name}'")
                if v.status == "READY"]
    if not versions:
        raise HypernymError(f"{parsed.name} has no READY version yet")
    return max(versions, key=lambda v: int(v.version))


def pull(ref: str, out_dir: str | Path, *, timm_config: bool = True,
         settings: Settings | None = None) -> Path:
    """Download a version's ``model.safetensors``, ``card.json`` and ``README.md`` into
    ``out_dir``, check the weights' sha256, and write timm's ``config.json`` beside them, so that
    ``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` loads it without hypernym. A
    detector gets ``detector_model.py`` instead, whose ``load_detector(OUT_DIR)`` rebuilds it
    with torchvision and timm.

    Raises:
        HypernymError: the weights or the card are not the bytes recorded at registration
            (the message names the artifact file).
    """
    settings = settings or get_settings()
    version = resolve(ref, settings=settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(version, Path(tmp), settings)
        card = _verified_card(version, local, settings)
        names = [WEIGHTS_FILE, CARD_FILE] + ([README_FILE] if (local / README_FILE).exists()
                                             else [])
        for name in names:
            shutil.copyfile(local / name, out / name)
    if card.detection:  # no timm layout for a detector: its builder, which needs no hypernym
        shutil.copyfile(Path(__file__).with_name(DETECTOR_FILE), out / DETECTOR_FILE)
    elif timm_config:
        from hypernym.registry.timm_export import write_timm_config

        write_timm_config(card, out, origin=f"models:/{version.name}/{version.version}")
    return out


def _download(version, tmp: Path, settings: Settings) -> Path:
    mlflow = mlflow_module()
    uri = f"models:/{version.name}/{version.version}/artifacts"
    for attempt in range(3):  # a freshly registered version may be a moment from READY
        try:
            with fluent_uri(settings.tracking_uri):
                return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                                dst_path=str(tmp)))
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def _verified_card(version, local: Path, settings: Settings) -> ModelCard:
    """The card of downloaded artifacts, after checking card and weights against the sha256s
    recorded at registration (version tags and card); old versions without them pass."""
    where = f"{version.name}/{version.version}"
    artifacts = _artifact_location(version, settings)
    card_sha = version.tags.get("card_sha256")
    if card_sha and sha256_file(local / CARD_FILE) != card_sha:
        raise HypernymError(
            f"{artifacts}/{CARD_FILE} of {where} is not the card registered (sha256 differs "
            "from the version's card_sha256 tag): it was modified after registration; restore "
            "it or register the model again")
    card = ModelCard.model_validate_json((local / CARD_FILE).read_text())
    expected = version.tags.get("weights_sha256") or card.weights_sha256
    if card.weights_sha256 and expected != card.weights_sha256:
        raise HypernymError(f"{artifacts}/{CARD_FILE} of {where} records other weights than "
                            "the version's weights_sha256 tag: the card was modified")
    if not expected:
        log.warning("%s was registered without a weights sha256: not verified", where)
        return card
    actual = sha256_file(local / WEIGHTS_FILE)
    if actual != expected:
        raise HypernymError(
            f"{artifacts}/{WEIGHTS_FILE} of {where} has sha256 {actual[:16]}..., but "
            f"{expected[:16]}... was registered: the file was modified or corrupted after "
            "registration. Restore it from a backup or register the model again; it was not "
            "loaded.")
    return card


def _model_id(version) -> str | None:
    """The LoggedModel id of a version (``models:/m-...`` source when the field is unset)."""
    source = str(version.source or "")
    return getattr(version, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None)


def _artifact_location(version, settings: Settings) -> str:
    model_id = _model_id(version)
    if model_id:
        try:
            location = client(settings.tracking_uri).get_logged_model(model_id).artifact_location
            return f"{location.rstrip('/')}/artifacts"  # where the pyfunc keeps its files
        except Exception:  # noqa: BLE001 - only for the message
            pass
    return str(version.source)


def fetch_card(ref: str, *, settings: Settings | None = None) -> ModelCard:
    """A version's card alone (no weights), checked against its registered sha256."""
    settings = settings or get_settings()
    version = resolve(ref, settings=settings)
    mlflow = mlflow_module()
    with tempfile.TemporaryDirectory() as tmp, fluent_uri(settings.tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{version.name}/{version.version}/artifacts/{CARD_FILE}",
            dst_path=tmp))
        expected = version.tags.get("card_sha256")
        if expected and sha256_file(local) != expected:
            raise HypernymError(f"{_artifact_location(version, settings)}/{CARD_FILE} of "
                                f"{version.name}/{version.version} was modified after "
                                "registration (sha256 differs from its card_sha256 tag)")
        return ModelCard.model_validate_json(local.read_text())


def load_card(ref: str, *, settings: Settings | None = None) -> ModelCard:
    """The verified model card of a reference."""
    with tempfile.TemporaryDirectory() as tmp:
        local = pull(ref, tmp, timm_config=False, settings=settings)
        return ModelCard.model_validate_json((local / CARD_FILE).read_text())


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
        local = pull(ref, tmp, timm_config=False, settings=settings)
        card = ModelCard.model_validate_json((local / CARD_FILE).read_text())
        if card.detection:
            raise HypernymError(f"{ref} is a {card.detection['detector']} detector, not a timm "
                                "classifier: pull it (`hypernym models pull`) and load it with "
                                f"{DETECTOR_FILE}'s load_detector, or start from its backbone "
                                f"{card.parent or ''}".rstrip())
        model = timm.create_model(card.arch, pretrained=False, num_classes=card.num_classes,
                                  **timm_kwargs)
        model.load_state_dict(load_file(str(local / WEIGHTS_FILE)))
    if num_classes is not None and num_classes != card.num_classes:
        model.reset_classifier(num_classes)
    # timm.data.resolve_data_config reads these: preprocessing travels with the weights.
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "input_size":
                            tuple(card.input_size), "mean": tuple(card.mean),
                            "std": tuple(card.std), "crop_pct": card.crop_pct,
                            "crop_mode": card.crop_mode, "interpolation": card.interpolation}
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
