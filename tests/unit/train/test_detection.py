"""``task: detection`` in one process: each torchvision detector on timm features trains through
the core (its named losses logged as parts) and predicts boxes; what the backbone modes freeze,
and the backbone's lower learning rate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from hypernym.config import parse_recipe
from hypernym.data.box_codec import BoxCodec
from hypernym.data.normalize import normalizer
from hypernym.data.reader import Sample
from hypernym.errors import HypernymError
from hypernym.train.core import Trainer
from hypernym.train.detector import BODY, build_detection_model, plan_detection
from hypernym.train.finetune import train_mode
from hypernym.train.model import build_optimizer
from hypernym.train.schedulers import build_scheduler
from hypernym.train.tasks import DetectionTask

SIZE = 64


def recipe(detection: dict | None = None, **train):
    return parse_recipe({
        "kind": "finetune", "name": "det", "task": "detection", "backbone": None,
        "data": {"path": "/unused", "img_size": SIZE, "batch_size": 4},
        "model": {"arch": "resnet10t"}, "optim": {"lr": 1e-3, "sched": "none"},
        "train": {"epochs": 1, "system_metrics_s": None, **train},
        "detection": {"fpn_channels": 32, **(detection or {})}})


def batch(seed: int = 0) -> Sample:
    """Four images with 0 to 3 bright squares each, the squares' boxes as class 0 (label 1)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.full((4, 3, SIZE, SIZE), 30, dtype=torch.uint8)
    targets = []
    for i in range(4):
        boxes = []
        for _ in range(i % 4):
            x, y = (int(v) for v in torch.randint(0, SIZE - 24, (2,), generator=gen))
            images[i, :, y:y + 20, x:x + 20] = 220
            boxes.append([x, y, x + 20, y + 20])
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.ones(len(boxes), dtype=torch.int64)})
    ids = torch.arange(4) + 4 * seed
    return Sample(images, targets, ids, torch.zeros(4, dtype=torch.int64))


class Loaders:
    def __init__(self, batches):
        self.batches = batches

    def split_sizes(self, split="train"):
        return [4 * len(self.batches)]

    def steps_per_epoch(self):
        return len(self.batches)

    def has(self, split):
        return False

    def train(self, epoch, progress):
        return list(self.batches)


def trainer(rec) -> Trainer:
    task = DetectionTask(num_classes=2, img_size=SIZE, codec=BoxCodec(SIZE))
    return Trainer.from_recipe(rec, dataset=SimpleNamespace(class_ids=["a", "b"]), task=task,
                               loaders=Loaders([batch(s) for s in range(3)]))


@pytest.mark.parametrize("detector,parts", [
    ("fcos", {"classification", "bbox_regression", "bbox_ctrness"}),
    ("retinanet", {"classification", "bbox_regression"}),
    ("fasterrcnn", {"classifier", "box_reg", "objectness", "rpn_box_reg"}),
])
def test_each_detector_trains_through_the_core_and_predicts_boxes(detector, parts):
    t = trainer(recipe({"detector": detector}))
    before = {k: v.clone() for k, v in t.state.model.state_dict().items()}
    result = t.train_step([batch(0)])
    assert set(result.parts) == parts and torch.isfinite(result.loss)
    assert torch.allclose(result.loss, sum(result.parts.values()))
    after = t.state.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # from random init the backbone's BatchNorm trains (torchvision's rule: frozen only for
    # trained weights; test_a_pretrained_backbone_lands_in_the_features_body_frozen)
    body = t.state.model.backbone.body
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    t.state.model.eval()
    with torch.no_grad():
        out = t.task.predict(t.state.model, t.normalize(batch(1).image))
    assert len(out) == 4 and set(out[0]) == {"boxes", "labels", "scores"}
    assert all(((o["labels"] >= 1) & (o["labels"] <= 2)).all() for o in out)
    with torch.no_grad():  # one image alone: its smallest pyramid level is 1x1
        assert len(t.task.predict(t.state.model, t.normalize(batch(1).image[:1]))) == 1


def test_backbone_modes_and_the_backbone_learning_rate():
    built = build_detection_model(recipe({"backbone_mode": "frozen"}), num_classes=2)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(BODY) for n in trainable)
    assert built.plan.frozen == ("backbone.body",) and not built.plan.lr_scales
    train_mode(built.model, built.plan)
    assert not built.model.backbone.body.training and built.model.backbone.fpn.training

    built = build_detection_model(recipe({"backbone_mode": "partial", "trainable_stages": 2}),
                                  num_classes=2)
    body = {n.removeprefix(BODY).split(".")[0] for n, p in built.model.named_parameters()
            if p.requires_grad and n.startswith(BODY)}
    assert body == {"layer3", "layer4"}
    assert built.plan.lr_scales == {}  # from random init nothing is pretrained
    with pytest.raises(HypernymError, match="trainable_stages is 6, but the backbone has 5"):
        build_detection_model(recipe({"backbone_mode": "partial", "trainable_stages": 6}),
                              num_classes=2)

    # a pretrained backbone trains at backbone_lr_scale of the LR, from the first step on
    rec = recipe({"backbone_lr_scale": 0.25})
    model = build_detection_model(rec, num_classes=2).model
    plan = plan_detection(model, rec.detection, pretrained=True)
    assert plan.lr_scales == {BODY: 0.25} and not plan.frozen
    optimizer = build_optimizer(model, rec.optim, plan)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        in_body = {names[id(p)].startswith(BODY) for p in group["params"]}
        assert in_body == {group["lr_scale"] == 0.25}
        biases = {names[id(p)].endswith(".bias") for p in group["params"]}
        assert group["weight_decay"] == 0 or biases == {False}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    build_scheduler(optimizer, rec.optim, epochs=1, steps=3)
    lrs = {g["lr_scale"]: g["lr"] for g in optimizer.param_groups}
    assert lrs[0.25] == pytest.approx(0.25 * lrs[1.0]) and lrs[1.0] == pytest.approx(1e-3)


def test_registered_detector_normalises_itself():
    rec = recipe()
    task = DetectionTask(num_classes=2, img_size=SIZE, codec=BoxCodec(SIZE))
    trained = trainer(rec).state.model.eval()
    plain = task.export_model(rec).eval()
    plain.load_state_dict(trained.state_dict())
    card = task.card_fields(plain, recipe=rec, dataset=None)["detection"]
    assert card["mean"] == list(rec.data.mean) and card["score_threshold"] == 0.3
    images = batch(2).image
    with torch.no_grad():
        # the core normalises on the device; the registered detector takes 0-1 images
        ours = trained(list(normalizer(torch.device("cpu"), rec.data.mean, rec.data.std)(images)))
        theirs = plain(list(images.float() / 255))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a["scores"], b["scores"], atol=1e-5)
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)


def test_a_pretrained_backbone_lands_in_the_features_body_frozen(tmp_path):
    """A registered classifier's weights (head left out) are the detector's ``features_only``
    body, BatchNorm frozen with the pretrained statistics; the FPN reads the stages' channels."""
    import timm
    from safetensors.torch import save_file

    from hypernym.registry.detector_model import build_detector

    classifier = timm.create_model("resnet10t", num_classes=5)
    with torch.no_grad():
        for tensor in [*classifier.parameters(), *classifier.buffers()]:
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)  # unlike any init: nothing here can come from one
    save_file(classifier.state_dict(), str(tmp_path / "model.safetensors"))
    config = {"detector": "fcos", "arch": "resnet10t", "num_classes": 2, "fpn_channels": 32,
              "img_size": SIZE, "mean": [0.0] * 3, "std": [1.0] * 3}
    body = build_detector(config, weights=str(tmp_path / "model.safetensors"),
                          weights_classes=5).backbone
    pretrained = classifier.state_dict()
    state = body.body.state_dict()
    assert state and all(torch.equal(v, pretrained[k]) for k, v in state.items())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.body.modules())
    assert [b[0].in_channels for b in body.fpn.inner_blocks] == [128, 256, 512]  # C3-C5
    assert body.strides == [8, 16, 32, 64, 128]
