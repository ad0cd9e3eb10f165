"""Export a registered model for publishing: the folder timm's ``push_to_hf_hub`` uploads.

Separate from `timm_export` (the ``config.json`` that every pull writes), because export pulls:
`timm_export` is imported by `models.pull` and must not import it back.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypernym.errors import HypernymError
from hypernym.registry.card import CARD_FILE, README_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from hypernym.registry.timm_export import data_config, model_config, timm_model
from hypernym.settings import Settings

__all__ = ["FORMATS", "export"]

FORMATS = ("hf",)


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
        if card.detection:
            raise HypernymError(f"{ref} is a detector: timm's Hub layout holds classifiers; "
                                "publish the folder `hypernym models pull` writes instead")
        staging = Path(stage) / "export"
        save_for_hf(timm_model(card, local / WEIGHTS_FILE), staging,
                    model_config=model_config(card, origin), safe_serialization=True,
                    data_config=data_config(card))
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
