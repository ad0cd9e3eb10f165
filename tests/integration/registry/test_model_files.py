"""The files of a registered version: sha256 integrity, timm's own layout, HF export, README."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from hypernym.errors import HypernymError
from hypernym.registry.export import export
from hypernym.registry.models import load_backbone, pull
from tests.integration.registry.helpers import register_tiny, settings_at

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    settings = settings_at(tmp_path_factory.mktemp("registry"))
    _, model, reg = register_tiny(settings, name="files")
    return settings, model, reg


def _artifact_dir(settings, reg) -> Path:
    version = MlflowClient(settings.tracking_uri).get_model_version(reg.name, str(reg.version))
    model_id = version.source.removeprefix("models:/")
    location = MlflowClient(settings.tracking_uri).get_logged_model(model_id).artifact_location
    return Path(location.removeprefix("file://"))


def test_pulled_folder_loads_in_timm_without_hypernym(registered, tmp_path):
    settings, model, reg = registered
    out = pull("files@candidate", tmp_path / "pulled", settings=settings)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "card.json", "config.json",
                                                    "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 5
    assert config["label_names"][0] == "n00000000"
    cfg = config["pretrained_cfg"]
    assert (cfg["input_size"], cfg["crop_pct"], cfg["crop_mode"], cfg["mean"], cfg["std"],
            cfg["interpolation"]) == ([3, 32, 32], 0.875, "center", [0.4] * 3, [0.2] * 3,
                                      "bilinear")
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    # -I: no PYTHONPATH, no user site; -S: no site-packages .pth files (the editable install of
    # hypernym is one); then only site-packages itself goes on the path.
    code = (
        "import sys; sys.path.append(sys.argv[1]); import importlib.util as u\n"
        "assert u.find_spec('hypernym') is None, 'hypernym is importable'\n"
        "import timm, torch\n"
        "m = timm.create_model('local-dir:' + sys.argv[2], pretrained=True).eval()\n"
        "x = torch.load(sys.argv[3])\n"
        "cfg = timm.data.resolve_data_config({}, model=m)\n"
        "print(cfg['input_size'], cfg['crop_pct'], m.pretrained_cfg['label_names'][:2])\n"
        "with torch.no_grad(): torch.save(m(x), sys.argv[4])\n")
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, site, str(out),
                           str(tmp_path / "x.pt"), str(tmp_path / "y.pt")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(3, 32, 32) 0.875 ['n00000000', 'n00000001']" in done.stdout
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), model(x))


def test_hf_export_is_timms_push_layout(registered, tmp_path):
    settings, _, _ = registered
    files = export("files/1", tmp_path / "hf", settings=settings)
    assert [p.name for p in files] == ["README.md", "config.json", "model.safetensors"]
    readme = (tmp_path / "hf" / "README.md").read_text()
    assert readme.startswith("---\ntags:\n- image-classification\n- timm\n")
    assert "library_name: timm" in readme and "# files v1" in readme
    with pytest.raises(HypernymError, match="not empty"):
        export("files/1", tmp_path / "hf", settings=settings)
    with pytest.raises(HypernymError, match="unknown export format 'onnx'; formats: hf"):
        export("files/1", tmp_path / "other", fmt="onnx", settings=settings)


def test_readme_is_rendered_from_the_card(registered, tmp_path):
    settings, _, reg = registered
    readme = (pull("files/1", tmp_path, settings=settings) / "README.md").read_text()
    for section in ("## Model", "## Data", "## Training recipe", "## Metrics", "## Lineage",
                    "## Intended use", "## Known limitations", "## Classes"):
        assert section in readme
    assert "train 300, val 50" in readme and "`n00007846` (person" in readme
    assert "| val/top1 | 0.5000 |" in readme and "| 0 | n00000000 | thing 0 |" in readme
    # ImageNet-style WordNet classes: the documented biases, and whether people were excluded
    assert "Towards Fairer Datasets" in readme and "was excluded from this model's data" in readme
    version = MlflowClient(settings.tracking_uri).get_model_version(reg.name, "1")
    assert version.description.startswith("# files\n")


def test_tampered_artifacts_are_refused_naming_the_file(registered, tmp_path):
    settings, _, reg = registered
    artifacts = _artifact_dir(settings, reg) / "artifacts"
    weights, card = artifacts / "model.safetensors", artifacts / "card.json"
    saved = tmp_path / "saved"
    saved.mkdir()
    shutil.copy(weights, saved / "w")
    shutil.copy(card, saved / "c")
    try:
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # one flipped bit in the last tensor: still loadable, not the same
        weights.write_bytes(bytes(data))
        with pytest.raises(HypernymError, match="modified or corrupted after registration") as e:
            pull("files@candidate", tmp_path / "p", settings=settings)
        assert f"{artifacts}/model.safetensors of files/1" in str(e.value)
        with pytest.raises(HypernymError, match="model.safetensors of files/1 has sha256"):
            load_backbone("files/1", settings=settings)
        from hypernym.cli import app

        result = CliRunner().invoke(app, ["models", "pull", "files/1", "--out", str(tmp_path)],
                                    env={"MLFLOW_TRACKING_URI": settings.tracking_uri})
        assert result.exit_code != 0 and "model.safetensors" in str(result.exception)
        shutil.copy(saved / "w", weights)
        # a card rewritten to match tampered weights is caught by the version's card tag
        card.write_text(card.read_text().replace('"num_classes": 5', '"num_classes": 5 '))
        with pytest.raises(HypernymError, match="card.json of files/1 is not the card registered"):
            pull("files/1", tmp_path / "p", settings=settings)
    finally:
        shutil.copy(saved / "w", weights)
        shutil.copy(saved / "c", card)
    assert (pull("files/1", tmp_path / "ok", settings=settings) / "model.safetensors").exists()
