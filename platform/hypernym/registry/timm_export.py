"""timm's own layout for registered models: ``config.json`` beside ``model.safetensors``.

timm writes the file (`timm.models.save_for_hf`, what `push_to_hf_hub` uploads), so
``timm.create_model("local-dir:DIR", pretrained=True)`` and the Hugging Face Hub read it as they
read any timm checkpoint: architecture, num_classes, ``label_names`` (the class ids),
``label_descriptions`` (their names) and ``pretrained_cfg`` with the input size, crop and
normalisation of the card.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypernym.errors import HypernymError
from hypernym.registry.card import (
    CARD_FILE,
    README_FILE,
    TIMM_CONFIG_FILE,
    WEIGHTS_FILE,
    ModelCard,
    sha256_file,
)
from hypernym.settings import Settings

__all__ = ["FORMATS", "export", "write_timm_config"]

FORMATS = ("hf",)
# pretrained_cfg keys timm's factory needs for these weights; the rest of timm's default cfg
# (tag, url, hf_hub_id, license, origin_url) describes timm's published weights, not these.
_KEEP = ("architecture", "first_conv", "classifier", "fixed_input_size", "input_size",
         "pool_size")


def _data_config(card: ModelCard) -> dict:
    return {"input_size": tuple(card.input_size), "crop_pct": card.crop_pct,
            "crop_mode": card.crop_mode, "interpolation": card.interpolation,
            "mean": tuple(card.mean), "std": tuple(card.std)}


def _model_config(card: ModelCard, origin: str) -> dict:
    config: dict = {"pretrained_cfg": {"tag": "hypernym", "origin_url": origin}}
    if card.classes:
        config["label_names"] = [c["id"] for c in card.classes]
        config["label_descriptions"] = {c["id"]: c.get("name", c["id"]) for c in card.classes}
    return config


def _model(card: ModelCard, weights: Path | None = None):
    import timm

    model = timm.create_model(card.arch, pretrained=False, num_classes=card.num_classes)
    if weights is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k in _KEEP}
    return model


def write_timm_config(card: ModelCard, directory: str | Path, *, origin: str = "") -> Path:
    """Write timm's ``config.json`` for ``card`` into ``directory`` (beside its weights)."""
    from timm.models import save_for_hf

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        # save_for_hf also writes the (random-init) weights of this throwaway model: only its
        # config is kept; the directory's registered weights stay the verified bytes.
        save_for_hf(_model(card), tmp, model_config=_model_config(card, origin),
                    safe_serialization=True, data_config=_data_config(card))
        shutil.copyfile(Path(tmp) / TIMM_CONFIG_FILE, directory / TIMM_CONFIG_FILE)
    return directory / TIMM_CONFIG_FILE


def export(ref: str, directory: str | Path, *, fmt: str = "hf",
           settings: Settings | None = None) -> list[Path]:
    """Export a registered model into ``directory`` in ``fmt`` and return the files written.

    ``hf``: the folder timm's ``push_to_hf_hub`` uploads (``model.safetensors``,
    ``config.json``, ``README.md`` with Hub front matter), written by ``save_for_hf`` with
    safetensors only (push_to_hf_hub's default also adds a pickled ``pytorch_model.bin``);
    upload it with ``huggingface_hub.upload_folder``.
    """
    from timm.models import save_for_hf

    from hypernym.registry.models import pull, resolve
    from hypernym.registry.readme import hf_front_matter, render_readme

    if fmt not in FORMATS:
        raise HypernymError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    version = resolve(ref, settings=settings)
    origin = f"models:/{version.name}/{version.version}"
    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise HypernymError(f"{out} is not empty: export into a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a half-written export never has the final name.
    with tempfile.TemporaryDirectory() as tmp, \
            tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as stage:
        local = pull(origin, tmp, timm_config=False, settings=settings)  # sha256-verified
        card = ModelCard.model_validate_json((local / CARD_FILE).read_text())
        staging = Path(stage) / "export"
        save_for_hf(_model(card, local / WEIGHTS_FILE), staging,
                    model_config=_model_config(card, origin), safe_serialization=True,
                    data_config=_data_config(card))
        # The registered bytes, so the README's sha256 holds (timm re-serialises the same
        # tensors; the file's metadata may differ).
        shutil.copyfile(local / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        assert sha256_file(staging / WEIGHTS_FILE) == card.weights_sha256 or \
            not card.weights_sha256
        readme = render_readme(card, name=f"{version.name} v{version.version}")
        (staging / README_FILE).write_text(hf_front_matter(card) + readme)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    return sorted(out.iterdir())
