"""A multi-label model served: every label over its class's threshold with its probability,
the whole image resized as multi-label validation does, the signature's columns, the card's
README."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hypernym.data.codec import RawSample
from hypernym.data.multilabel import MultiLabelCodec
from hypernym.registry.card import ModelCard, sha256_file
from hypernym.registry.pyfunc_model import ImageClassifier
from hypernym.registry.readme import render_readme
from hypernym.registry.serving_schema import signature

LOGITS = [2.0, -1.0, 0.5, 0.0]  # sigmoid: 0.881, 0.269, 0.622, 0.5
THRESHOLDS = [0.9, 0.2, 0.6, 0.55]


def _jpeg(w=90, h=70) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A model whose logits are LOGITS whatever the image (zero head weights)."""
    model = timm.create_model("resnet10t", num_classes=4)
    with torch.no_grad():
        model.get_classifier().weight.zero_()
        model.get_classifier().bias.copy_(torch.tensor(LOGITS))
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_file(model.state_dict(), str(path))
    card = {"arch": "resnet10t", "num_classes": 4, "input_size": [3, 40, 40],
            "mean": [0.5] * 3, "std": [0.25] * 3, "weights_sha256": sha256_file(path),
            "classes": [{"id": f"c{i}", "name": f"n{i}"} for i in range(4)],
            "objective": "multilabel", "thresholds": THRESHOLDS, "crop_pct": 1.0,
            "crop_mode": "squash", "task": "finetune"}
    return ImageClassifier(card, str(path)), card


def test_answers_every_label_over_its_threshold_most_probable_first(classifier):
    model, _ = classifier
    [row, bad] = model.predict([_jpeg(), "%%%"], top_k=1)
    # c0: 0.881 < 0.9 (no); c1: 0.269 >= 0.2; c2: 0.622 >= 0.6; c3: 0.5 < 0.55
    assert row["labels"] == ["c2", "c1"] and row["class_ids"] == [2, 1]
    assert row["names"] == ["n2", "n1"] and row["thresholds"] == [0.6, 0.2]
    assert row["probs"] == pytest.approx([0.622459, 0.268941], abs=1e-6)
    assert row["error"] is None
    assert bad == {"class_ids": [], "labels": [], "names": [], "probs": [], "thresholds": [],
                   "error": "image 1: not valid base64 (send the image file's bytes, "
                            "base64-encoded)"}


def test_preprocessing_is_the_multilabel_validation_transform(classifier):
    model, _ = classifier
    data = _jpeg(90, 70)
    meta = json.dumps({"labels": [1], "boxes": [], "size": [90, 70]}).encode()
    image, _ = MultiLabelCodec(4, img_size=40, train=False)(
        RawSample("k", {"jpg": data, "json": meta}, 0, 0, "s"), None)
    served = model.preprocess(data)
    assert served.shape == image.shape == (3, 40, 40)
    assert (served.int() - image.int()).abs().max() <= 1  # the whole image, squashed


def test_signature_says_labels_over_thresholds():
    multi = signature(multi_label=True)
    assert [c.name for c in multi.outputs.inputs] == ["class_ids", "labels", "names", "probs",
                                                      "thresholds", "error"]
    assert multi.params is None
    single = signature()
    assert "thresholds" not in [c.name for c in single.outputs.inputs]
    assert [p.name for p in single.params.params] == ["top_k"]


def test_readme_lists_the_thresholds(classifier):
    _, raw = classifier
    card = ModelCard.model_validate({**{k: v for k, v in raw.items()}, "loss": "bce"})
    text = render_readme(card, name="glyph-scenes")
    assert "multi-label classifier, one sigmoid per class (loss `bce`)" in text
    assert "resize the whole image to 40x40" in text
    assert "| 2 | c2 | n2 | 0.6000 |" in text
    assert "every class whose probability reaches that class's threshold" in text
