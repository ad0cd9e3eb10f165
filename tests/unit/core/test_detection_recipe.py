"""A ``task: detection`` recipe: its section's defaults, and everything detection cannot do
refused before anything starts, each with the key to change."""

from __future__ import annotations

import pytest

from hypernym.config import parse_recipe
from hypernym.errors import HypernymError


def raw(**extra) -> dict:
    out = {"kind": "finetune", "name": "d", "task": "detection", "backbone": None,
           "data": {"path": "/d", "img_size": 64}, "model": {"arch": "resnet10t"}}
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def test_defaults_and_the_registry_metric():
    recipe = parse_recipe(raw())
    spec = recipe.detection
    assert (spec.detector, spec.backbone_mode, spec.backbone_lr_scale, spec.frozen_bn,
            spec.crop) == ("fcos", "full", 0.1, True, "none")
    assert recipe.registry.metric == "val/map"  # COCO's mAP judges detections
    assert parse_recipe(raw(registry={"weights": "ema"}, train={"ema_decay": 0.99})
                        ).registry.metric == "val_ema/map"
    assert parse_recipe(raw(optim={"sched": "plateau"})).optim.plateau_metric == "val/map"
    # the resolved recipe validates again as it is (workers, resume, recipe.json)
    again = parse_recipe(recipe.model_dump(mode="json"))
    assert again == recipe
    partial = parse_recipe(raw(detection={"detector": "fasterrcnn", "backbone_mode": "partial",
                                          "trainable_stages": 2}))
    assert partial.detection.trainable_stages == 2
    assert parse_recipe({k: v for k, v in raw().items() if k != "task"}).detection is None


@pytest.mark.parametrize("extra,needles", [
    ({"train": {"mixup_alpha": 0.2}}, ["cannot use Mixup or CutMix", "train.mixup_alpha"]),
    ({"train": {"cutmix_alpha": 1.0}}, ["a box cannot be blended"]),
    ({"kind": "pretrain"}, ["use kind: finetune"]),
    ({"train": {"loss": "semantic"}}, ["drop train.loss"]),
    ({"data": {"decode_on": "device"}}, ["drop data.decode_on"]),
    ({"optim": {"layer_decay": 0.7}}, ["detection.backbone_lr_scale"]),
    ({"scaling": {"strategy": "fsdp"}}, ["scaling.strategy ddp"]),
    ({"mode": "linear"}, ["detection.backbone_mode"]),
    ({"detection": {"backbone_mode": "partial"}}, ["needs trainable_stages"]),
    ({"detection": {"detector": "yolo"}}, ["'fcos', 'retinanet' or 'fasterrcnn'"]),
    ({"detection": {"fpn_channels": 48}}, ["GroupNorm of 32 groups"]),
    ({"task": "classification", "detection": {}}, ["a detection section needs task: detection"]),
])
def test_what_detection_cannot_do_is_refused(extra, needles):
    data = raw(**extra)
    if data["kind"] == "pretrain":
        data.pop("backbone")
    with pytest.raises(HypernymError) as err:
        parse_recipe(data)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
