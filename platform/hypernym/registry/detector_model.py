"""A torchvision detector on a timm backbone: what ``task: detection`` trains and registers.

The backbone is timm's ``features_only`` model of the architecture (the registered backbone's
weights), its last stages joined by torchvision's `FeaturePyramidNetwork`, as torchvision's own
``BackboneWithFPN`` joins a torchvision ResNet; the detector is torchvision's FCOS, RetinaNet or
Faster R-CNN on it. Everything about it is one JSON-able config (the model card's ``detection``).

This file imports torch, torchvision, timm and safetensors only, never hypernym: the registered
pyfunc carries it (MLflow's ``code_paths``) and ``hypernym models pull`` writes it beside the
weights, so a detector rebuilds anywhere those four are installed::

    import sys; sys.path.insert(0, "DIR")            # the pulled folder
    from detector_model import load_detector
    model = load_detector("DIR")                      # torchvision detector, eval mode
    image = torchvision.io.decode_image("scene.jpg")  # uint8 [3, H, W]
    boxes = model([image.float() / 255])[0]           # boxes (x0 y0 x1 y1 pixels), labels, scores

Labels follow torchvision's COCO detectors: 0 is background, label ``i + 1`` is class ``i`` of
the card's ``classes``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DETECTORS", "MIN_SCORE", "TimmFPN", "build_detector", "load_detector",
           "stage_modules"]

DETECTORS = ("fcos", "retinanet", "fasterrcnn")
# Detections scored below this are not returned: torchvision's evaluation threshold (low, so
# that mAP sees the whole precision-recall curve); a served model also applies the card's own.
MIN_SCORE = 0.05
# Backbone stages each detector feeds its FPN by default: torchvision's choice (C3-C5 plus P6
# and P7 for the one-stage detectors, C2-C5 plus a pooled level for Faster R-CNN).
DEFAULT_LEVELS = {"fcos": 3, "retinanet": 3, "fasterrcnn": 4}


class TimmFPN(nn.Module):
    """timm features (the last ``levels`` stages) through torchvision's FPN.

    Attributes:
        body: timm's ``features_only`` model.
        fpn: torchvision's `FeaturePyramidNetwork` (with P6/P7 or a max-pooled extra level).
        out_channels: channels of every pyramid level (what torchvision's detectors read).
        strides: each pyramid level's stride in input pixels, extra levels included.
    """

    def __init__(self, arch: str, *, levels: int, channels: int, extra: str,
                 frozen_bn: bool = True, timm_kwargs: dict[str, Any] | None = None,
                 weights: str | None = None, weights_classes: int | None = None) -> None:
        import timm
        from timm.layers import freeze_batch_norm_2d
        from torchvision.ops.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
            LastLevelP6P7,
        )

        super().__init__()
        kwargs = dict(timm_kwargs or {})
        if weights is not None:  # timm loads a classifier's checkpoint, then keeps the features
            kwargs.update(pretrained=True, pretrained_cfg_overlay={
                "file": weights, "num_classes": weights_classes})
        body = timm.create_model(arch, features_only=True,
                                 out_indices=tuple(range(-levels, 0)), **kwargs)
        # torchvision's references freeze BatchNorm in a fine-tuned backbone: batches of a few
        # large images give poor statistics.
        self.body = freeze_batch_norm_2d(body) if frozen_bn else body
        reductions = list(body.feature_info.reduction())
        if extra == "p6p7":
            block = LastLevelP6P7(channels, channels)  # from P5, as RetinaNet v2 and FCOS do
            reductions += [reductions[-1] * 2, reductions[-1] * 4]
        else:
            block = LastLevelMaxPool()
            reductions += [reductions[-1] * 2]
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), channels,
                                         extra_blocks=block)
        self.out_channels = channels
        self.strides = reductions

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def stage_modules(body: nn.Module) -> list[str]:
    """The names (in ``body``) of the backbone's stages, first to last: the modules whose
    outputs are timm's feature levels (all of them, not only the ones the FPN reads)."""
    names = []
    for info in body.feature_info.info:
        name = info["module"]
        try:
            body.get_submodule(name)
        except AttributeError:  # timm's FeatureListNet flattens nested names
            name = name.replace(".", "_")
            body.get_submodule(name)
        names.append(name)
    return names


def build_detector(config: dict[str, Any], *, weights: str | None = None,
                   weights_classes: int | None = None) -> nn.Module:
    """The torchvision detector a config describes (random init, or the backbone's weights).

    Args:
        config: ``detector`` (fcos, retinanet, fasterrcnn), ``arch`` (timm), ``num_classes``
            (the dataset's; the detector has one more, background), ``levels``,
            ``fpn_channels``, ``img_size`` (images are resized to fit it), ``mean``/``std``
            (the detector normalises 0-1 images itself), ``frozen_bn``,
            ``detections_per_image``, ``timm_kwargs``.
        weights: a timm classifier's safetensors of the same architecture (a registered
            backbone) to start the backbone from; its head is left out.
        weights_classes: that classifier's number of classes.
    """
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    detector = config["detector"]
    if detector not in DETECTORS:
        raise ValueError(f"detector {detector!r}: use one of {', '.join(DETECTORS)}")
    levels = int(config.get("levels") or DEFAULT_LEVELS[detector])
    backbone = TimmFPN(config["arch"], levels=levels, channels=int(config["fpn_channels"]),
                       extra="pool" if detector == "fasterrcnn" else "p6p7",
                       frozen_bn=bool(config.get("frozen_bn", True)),
                       timm_kwargs=config.get("timm_kwargs"), weights=weights,
                       weights_classes=weights_classes)
    size = int(config["img_size"])
    common = {"num_classes": int(config["num_classes"]) + 1, "min_size": size, "max_size": size,
              "image_mean": list(config["mean"]), "image_std": list(config["std"])}
    per_image = int(config.get("detections_per_image", 100))
    strides = backbone.strides
    if detector == "fcos":  # one point per location: the anchor "size" is the stride
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        model = FCOS(backbone, anchor_generator=anchors, score_thresh=MIN_SCORE,
                     detections_per_img=per_image,
                     head=_fcos_head(backbone.out_channels, common["num_classes"]), **common)
    elif detector == "retinanet":  # torchvision's: 4x the stride, three scales, three shapes
        anchors = AnchorGenerator(
            tuple((4 * s, round(4 * s * 2 ** (1 / 3)), round(4 * s * 2 ** (2 / 3)))
                  for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
        model = RetinaNet(backbone, anchor_generator=anchors, score_thresh=MIN_SCORE,
                          detections_per_img=per_image, **common)
    else:
        return _faster_rcnn(backbone, levels, per_image, common)
    # One-stage heads score every label with its own sigmoid, label 0 too: silence it, so that
    # the background is never detected (Faster R-CNN's softmax treats label 0 as background).
    model.head.classification_head.register_forward_hook(_no_background)
    return model


def _fcos_head(channels: int, num_classes: int) -> nn.Module:
    """torchvision's FCOS head; below 64 channels its GroupNorm takes two channels per group
    instead of its 32 groups: one channel per group normalises a 1x1 pyramid level (P7 of a
    small image) to nothing, and torchvision refuses it for a single image."""
    from functools import partial

    from torchvision.models.detection.fcos import (
        FCOSClassificationHead,
        FCOSHead,
        FCOSRegressionHead,
    )

    head = FCOSHead(channels, 1, num_classes)
    if channels < 64:
        norm = partial(nn.GroupNorm, channels // 2)
        head.classification_head = FCOSClassificationHead(channels, 1, num_classes,
                                                          norm_layer=norm)
        head.regression_head = FCOSRegressionHead(channels, 1, norm_layer=norm)
    return head


def _no_background(module: nn.Module, inputs, logits: torch.Tensor) -> torch.Tensor:
    return logits.index_fill(-1, torch.zeros(1, dtype=torch.long, device=logits.device), -1e4)


def _faster_rcnn(backbone: TimmFPN, levels: int, per_image: int, common: dict) -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    strides = backbone.strides
    # Faster R-CNN: torchvision's 8x the stride, one scale, three shapes per level
    anchors = AnchorGenerator(tuple((8 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
    pool = MultiScaleRoIAlign([str(i) for i in range(levels)], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, box_roi_pool=pool,
                      box_score_thresh=MIN_SCORE, box_detections_per_img=per_image, **common)


def load_detector(folder: str | Path) -> nn.Module:
    """The detector registered in ``folder`` (``card.json`` and ``model.safetensors``, as
    ``hypernym models pull`` writes them), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    card = json.loads((folder / "card.json").read_text())
    if not card.get("detection"):
        raise ValueError(f"{folder / 'card.json'} describes a classifier, not a detector: load "
                         "it with timm.create_model('local-dir:...', pretrained=True)")
    model = build_detector(card["detection"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()
