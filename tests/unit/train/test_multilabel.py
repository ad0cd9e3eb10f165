"""The multi-label task's parts: its figures against scikit-learn, Mixup/CutMix on multi-hot
targets, its losses, its codec's crops that drop the labels they cut away, and the recipe keys
it checks."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from hypernym.config import parse_recipe
from hypernym.data.codec import RawSample
from hypernym.data.multilabel import MultiLabelCodec, visible_fraction
from hypernym.errors import HypernymError
from hypernym.train.tasks import multilabel_metrics as M
from hypernym.train.tasks.multilabel import BinaryCrossEntropy, MultiLabelTask


def scored(seed: int = 0, n: int = 60, classes: int = 5):
    rng = np.random.default_rng(seed)
    targets = rng.random((n, classes)) < 0.35
    targets[:, -1] = False  # a class without a positive
    scores = np.clip(targets * 0.35 + rng.random((n, classes)) * 0.7, 0, 1)
    return targets, scores


def test_average_precision_is_scikit_learns_per_class_and_skips_classes_without_positives():
    from sklearn.metrics import average_precision_score

    targets, scores = scored()
    ap = M.average_precision(targets, scores)
    assert np.isnan(ap[-1])
    for c in range(4):
        assert ap[c] == pytest.approx(average_precision_score(targets[:, c], scores[:, c]))
    assert M.summary(targets, scores, 0.5)["map"] == pytest.approx(ap[:4].mean())


def test_decisions_match_scikit_learn_micro_and_per_class():
    from sklearn.metrics import precision_recall_fscore_support

    targets, scores = scored(1)
    at = M.decisions(targets, scores, 0.5)
    p, r, f, s = precision_recall_fscore_support(targets, scores >= 0.5, zero_division=0)
    assert np.allclose(at["precision"], p) and np.allclose(at["recall"], r)
    assert np.allclose(at["f1"], f) and np.array_equal(at["support"], s)
    micro = precision_recall_fscore_support(targets, scores >= 0.5, average="micro",
                                            zero_division=0)
    assert (at["op"], at["or"], at["of1"]) == pytest.approx(micro[:3])
    assert at["cf1"] == pytest.approx(2 * p.mean() * r.mean() / (p.mean() + r.mean()))


def test_best_threshold_maximises_each_classes_f1():
    targets, scores = scored(2)
    thresholds, best = M.best_thresholds(targets, scores, fallback=0.5)
    assert thresholds[-1] == 0.5 and np.isnan(best[-1])
    for c in range(4):
        candidates = np.unique(scores[:, c])
        f1 = [M.decisions(targets[:, [c]], scores[:, [c]], t)["f1"][0] for t in candidates]
        assert best[c] == pytest.approx(max(f1))
        at = M.decisions(targets[:, [c]], scores[:, [c]], thresholds[c])["f1"][0]
        assert at == pytest.approx(max(f1))
    tuned = M.summary(targets, scores, 0.5)["f1_tuned"]
    assert tuned >= M.summary(targets, scores, 0.5)["f1"]


def test_cardinality_counts_labels_per_image():
    targets = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    scores = np.array([[.9, .1, .1], [.9, .2, .1], [.9, .9, .9], [.1, .9, .2]])
    c = M.cardinality(targets, scores, 0.5)
    assert c["true"] == 2.0 and c["predicted"] == 1.5
    assert c["expected"] == pytest.approx(scores.sum() / 4)
    assert c["by_true"][2] == {"images": 2, "predicted": 1.0, "expected": pytest.approx(1.2)}


def test_mixup_mixes_the_multi_hot_rows_like_the_images():
    from timm.data import Mixup

    targets = torch.eye(4)[[0, 1, 2, 3]] + torch.eye(4)[[1, 1, 3, 3]]  # several labels
    targets = targets.clamp(max=1)
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        task = MultiLabelTask(num_classes=4, loss_fn=BinaryCrossEntropy(), mixup=Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, mode="batch", num_classes=4,
            label_smoothing=0.0, multi_label=True))
        np.random.seed(3)
        images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
        mixed, target = task.mix(images, targets.clone())
        # each image's share of its own pixels: its lambda (CutMix: the area not pasted over)
        own = ((mixed[0] == 0).float().mean() if cutmix else 1 - mixed[0, 0, 0, 0] / 3).item()
        assert 0 < own < 1
        expected = own * targets + (1 - own) * targets.flip(0)
        assert torch.allclose(target, expected, atol=1e-6), (mixup, cutmix, target)


def test_losses_sum_over_classes_and_average_over_images():
    from timm.loss import AsymmetricLossMultiLabel

    logits, target = torch.randn(6, 5), (torch.rand(6, 5) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    assert BinaryCrossEntropy()(logits, target) == pytest.approx(bce.item() / 6)
    plain = AsymmetricLossMultiLabel(gamma_neg=0, gamma_pos=0, clip=0, reduction="batchmean")
    assert plain(logits, target).item() == pytest.approx(bce.item() / 6, rel=1e-5)
    recipe = parse_recipe(recipe_raw(train={"loss": "asl"}, multilabel={"asl_gamma_neg": 2.0,
                                                                         "asl_clip": 0.1}))
    from hypernym.train.tasks.multilabel import build_multilabel_loss

    asl = build_multilabel_loss(recipe)
    assert (asl.gamma_neg, asl.gamma_pos, asl.clip) == (2.0, 1.0, 0.1)


def recipe_raw(**extra) -> dict:
    return {"kind": "finetune", "name": "ml", "backbone": None, "task": "multilabel",
            "data": {"path": "/unused", "img_size": 32}, "model": {"arch": "resnet10t"},
            **extra}


@pytest.mark.parametrize("extra, message", [
    ({"train": {"loss": "ce"}}, "train.loss 'ce' is a loss of task classification; task "
                                "multilabel takes bce or asl"),
    ({"task": "classification", "train": {"loss": "bce"}}, "task classification takes ce or "
                                                           "semantic"),
    ({"task": "classification", "multilabel": {"threshold": 0.3}},
     "multilabel.threshold is a key of task: multilabel"),
    ({"multilabel": {"asl_gamma_neg": 2}}, "multilabel.asl_gamma_neg tunes train.loss asl"),
    ({"data": {"path": "/x", "decode_on": "device"}}, "set data.decode_on: loader"),
    ({"multilabel": {"threshold": 1.5}}, "multilabel.threshold: Input should be less than 1"),
])
def test_recipe_keys_fit_the_task(extra, message):
    with pytest.raises(HypernymError) as err:
        parse_recipe(recipe_raw(**extra))
    assert message in str(err.value)


def test_recipe_defaults_follow_the_task():
    recipe = parse_recipe(recipe_raw(train={"ema_decay": 0.99}, optim={"sched": "plateau"}))
    assert recipe.train.loss == "bce"
    assert recipe.registry.candidates(True) == {"model": "val/map", "ema": "val_ema/map"}
    assert recipe.optim.plateau_metric == "val/map"
    again = parse_recipe(recipe.model_dump(mode="json"))  # a resolved recipe reads back
    assert again == recipe
    plain = parse_recipe({**recipe_raw(), "task": "classification"})
    assert plain.train.loss == "ce" and plain.registry.metric == "auto"


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="JPEG")
    return buffer.getvalue()


def raw_sample(labels, boxes, size=(80, 40)) -> RawSample:
    meta = {"labels": labels, "size": list(size),
            "boxes": [{"class": c, "box": b, "flags": []} for c, b in boxes]}
    return RawSample("k", {"jpg": jpeg(*size), "json": json.dumps(meta).encode()}, 0, 0, "s")


def test_visible_fraction():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [30, 30, 40, 40], [2, 2, 2, 2]])
    seen = visible_fraction(boxes, (0, 0, 10, 10))
    assert seen.tolist() == pytest.approx([1.0, 0.25, 0.0, 1.0])


def test_training_crop_drops_the_labels_it_cuts_away(monkeypatch):
    # class 0 on the left half, class 1 on the right, class 2 without a box
    sample = raw_sample([0, 1, 2], [(0, [4, 4, 36, 36]), (1, [44, 4, 76, 36])])
    codec = MultiLabelCodec(4, img_size=16, train=True, min_visible=0.5)
    right_half = (0, 40, 40, 40, 0)  # top, left, height, width, flip
    monkeypatch.setattr("hypernym.data.multilabel.draw_crop", lambda *a: right_half)
    image, target = codec(sample, None)
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    assert target.tolist() == [0.0, 1.0, 1.0, 0.0]
    off_centre = (0, 20, 40, 40, 1)  # half of each box: kept at 0.5, dropped above
    monkeypatch.setattr("hypernym.data.multilabel.draw_crop", lambda *a: off_centre)
    assert codec(sample, None)[1].tolist() == [1.0, 1.0, 1.0, 0.0]
    strict = MultiLabelCodec(4, img_size=16, train=True, min_visible=0.6)
    assert strict(sample, None)[1].tolist() == [0.0, 0.0, 1.0, 0.0]
    keep_all = MultiLabelCodec(4, img_size=16, train=True, min_visible=0.0)
    monkeypatch.setattr("hypernym.data.multilabel.draw_crop", lambda *a: right_half)
    assert keep_all(sample, None)[1].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_boxes_scale_to_a_reduced_decode():
    codec = MultiLabelCodec(2, img_size=16, train=True)
    ann_sample = raw_sample([0, 1], [(0, [0, 0, 40, 40]), (1, [40, 0, 80, 40])])
    from hypernym.data.annotations import parse_annotation

    ann = parse_annotation(ann_sample.fields["json"])
    # decoded at half the stored size (40 x 20): the crop of the left half there
    assert codec.target(ann, (0, 0, 20, 20, 0), (40, 20)).tolist() == [1.0, 0.0]


def test_evaluation_resizes_the_whole_image_and_keeps_every_label():
    sample = raw_sample([0, 3], [(0, [0, 0, 8, 8])])
    image, target = MultiLabelCodec(4, img_size=24, train=False)(sample, None)
    assert image.shape == (3, 24, 24) and target.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_a_label_outside_the_classes_is_a_bad_sample():
    with pytest.raises(ValueError, match="outside the dataset's 2"):
        MultiLabelCodec(2, img_size=16, train=False)(raw_sample([0, 2], []), None)


def test_a_batch_of_targets_is_one_float_tensor():
    from hypernym.data.collate import Collate
    from hypernym.data.reader import Sample

    codec = MultiLabelCodec(4, img_size=16, train=False)
    samples = [Sample(*codec(raw_sample([i, 3], []), None), i, 0) for i in range(3)]
    batch = Collate(codec)(samples)
    assert batch.image.shape == (3, 3, 16, 16) and batch.id.tolist() == [0, 1, 2]
    assert batch.target.tolist() == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]]
