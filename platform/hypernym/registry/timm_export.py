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

from hypernym.registry.card import (
    TIMM_CONFIG_FILE,
    ModelCard,
)

__all__ = ["model_config", "data_config", "timm_model", "write_timm_config"]

# pretrained_cfg keys timm's factory needs for these weights; the rest of timm's default cfg
# (tag, url, hf_hub_id, license, origin_url) describes timm's published weights, not these.
_KEEP = ("architecture", "first_conv", "classifier", "fixed_input_size", "input_size",
         "pool_size")


def data_config(card: ModelCard) -> dict:
    return {"input_size": tuple(card.input_size), "crop_pct": card.crop_pct,
            "crop_mode": card.crop_mode, "interpolation": card.interpolation,
            "mean": tuple(card.mean), "std": tuple(card.std)}


def model_config(card: ModelCard, origin: str) -> dict:
    config: dict = {"pretrained_cfg": {"tag": "hypernym", "origin_url": origin}}
    if card.classes:
        config["label_names"] = [c["id"] for c in card.classes]
        config["label_descriptions"] = {c["id"]: c.get("name", c["id"]) for c in card.classes}
    return config


def timm_model(card: ModelCard, weights: Path | None = None):
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
        save_for_hf(timm_model(card), tmp, model_config=model_config(card, origin),
                    safe_serialization=True, data_config=data_config(card))
        shutil.copyfile(Path(tmp) / TIMM_CONFIG_FILE, directory / TIMM_CONFIG_FILE)
    return directory / TIMM_CONFIG_FILE
