"""Request parsing, image preprocessing parity with training, and the rendered card."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hypernym.data.transforms import eval_transform
from hypernym.errors import HypernymError
from hypernym.registry.card import ModelCard, sha256_file
from hypernym.registry.pyfunc_model import ImageClassifier, IntegrityError, images_from_input
from hypernym.registry.readme import render_readme
from hypernym.serving.requests import parse_request


def _jpeg(w=90, h=70) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=4).state_dict(), str(path))
    card = {"arch": "resnet10t", "num_classes": 4, "input_size": [3, 48, 48],
            "mean": [0.5] * 3, "std": [0.25] * 3, "weights_sha256": sha256_file(path),
            "classes": [{"id": f"c{i}", "name": f"n{i}"} for i in range(4)]}
    return ImageClassifier(card, str(path)), card, path


def test_preprocessing_is_the_training_eval_transform(classifier):
    model, _, _ = classifier
    data = _jpeg()
    assert torch.equal(model.preprocess(data), eval_transform(48)(data))
    assert torch.equal(model.preprocess(base64.b64encode(data).decode()), model.preprocess(data))
    assert torch.equal(model.preprocess("data:image/jpeg;base64," +
                                        base64.b64encode(data).decode()), model.preprocess(data))
    gray = np.full((50, 60), 7, dtype=np.uint8)
    assert model.preprocess(gray).shape == (3, 48, 48)


def test_bad_images_get_per_item_errors(classifier):
    model, _, _ = classifier
    rows = model.predict([_jpeg(), "%%%", base64.b64encode(b"GIF8").decode(),
                          np.zeros((4, 4, 2), np.uint8), [[1.5]]], top_k=2)
    assert rows[0]["error"] is None and len(rows[0]["class_ids"]) == 2
    assert rows[0]["names"] == [f"n{i}" for i in rows[0]["class_ids"]]
    assert "image 1: not valid base64" in rows[1]["error"]
    assert "image 2: cannot decode the image (4 bytes)" in rows[2]["error"]
    assert "image 3: an array image must be [H, W, 3]" in rows[3]["error"]
    assert "image 4: an array image must hold uint8 pixels" in rows[4]["error"]


def test_tampered_weights_are_refused(classifier, tmp_path):
    _, card, path = classifier
    bad = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors: sha256 .* does not match"):
        ImageClassifier(card, str(bad))


def test_input_forms():
    import pandas as pd

    assert images_from_input(pd.DataFrame({"image": ["a", "b"]})) == ["a", "b"]
    assert images_from_input(pd.DataFrame({"image": [["a", "b"]]})) == ["a", "b"]  # `inputs`
    assert len(images_from_input(np.zeros((3, 8, 8, 3), np.uint8))) == 3
    assert parse_request({"dataframe_split": {"columns": ["image"], "data": [["x"], ["y"]]},
                          "params": {"top_k": 2}}) == (["x", "y"], 2)
    assert parse_request({"dataframe_records": [{"image": "x"}]}) == (["x"], None)
    assert parse_request({"inputs": {"image": ["x"]}}) == (["x"], None)
    assert parse_request({"instances": [{"image": "x"}]}) == (["x"], None)
    with pytest.raises(HypernymError, match="one of dataframe_split, dataframe_records"):
        parse_request({"data": []})
    with pytest.raises(HypernymError, match="top_k must be a positive integer"):
        parse_request({"inputs": {"image": ["x"]}, "params": {"top_k": 0}})
    with pytest.raises(HypernymError, match="column named 'image'"):
        parse_request({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}})


def test_readme_states_imagenet_biases_only_for_wordnet_data():
    base = {"arch": "resnet10t", "num_classes": 2, "input_size": [3, 32, 32], "mean": [0.5] * 3,
            "std": [0.2] * 3, "task": "finetune"}
    digits = ModelCard(**base, classes=[{"id": "0", "name": "zero"}, {"id": "1", "name": "one"}],
                       dataset={"name": "digits", "images": {"train": 10}})
    text = render_readme(digits, name="d")
    assert "Towards Fairer Datasets" not in text and "train 10" in text
    backbone = ModelCard(**{**base, "task": "pretrain"},
                         classes=[{"id": "n02084071", "name": "dog"},
                                  {"id": "n02121808", "name": "cat"}],
                         dataset={"name": "in21k-p", "excluded_subtrees": []})
    text = render_readme(digits, name="d", parent=backbone)
    assert "Its backbone learned from ImageNet-style WordNet data" in text
    assert "was NOT excluded from its backbone's data" in text


@pytest.mark.gpu
def test_the_classifier_on_the_gpu_answers_as_on_the_cpu(classifier):
    _, card, path = classifier
    on_cpu = ImageClassifier(card, str(path), device="cpu")
    on_gpu = ImageClassifier(card, str(path), device="cuda")
    assert next(on_gpu.model.parameters()).is_cuda
    images = [_jpeg(), _jpeg(60, 80)]
    for a, b in zip(on_cpu.predict(images, top_k=4), on_gpu.predict(images, top_k=4),
                    strict=True):
        assert a["class_ids"] == b["class_ids"]
        assert np.allclose(a["probs"], b["probs"], atol=1e-3)
