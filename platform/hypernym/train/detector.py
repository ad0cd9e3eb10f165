"""Building a recipe's detector (`hypernym.registry.detector_model`) and what of it trains.

The backbone starts from the registered backbone's weights (timm loads its classifier checkpoint
into the ``features_only`` model; the classifier's head is left out) or from random init. What
trains is the ``detection`` section's:

- ``frozen``: the backbone is fixed (timm's ``freeze``: parameters and BatchNorm statistics, and
  eval mode throughout); the FPN and the detector's heads train.
- ``partial``: the backbone's last ``trainable_stages`` stages train too; the stem and earlier
  stages are frozen (torchvision's ``trainable_backbone_layers``).
- ``full``: every layer trains.

In ``partial`` and ``full`` a pretrained backbone's LR is ``backbone_lr_scale`` times the
recipe's: it needs smaller steps than the freshly initialised FPN and heads; ``frozen_bn`` fixes
its BatchNorm statistics. From random init the whole detector trains at the recipe's LR and its
BatchNorm layers train (torchvision's builders do the same: frozen BatchNorm only for trained
weights).
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from hypernym.errors import HypernymError
from hypernym.registry.detector_model import build_detector, stage_modules
from hypernym.settings import Settings
from hypernym.train.finetune import FinetunePlan, freeze_all_but
from hypernym.train.model import BuiltModel

__all__ = ["BODY", "build_detection_model", "detector_config", "plan_detection"]

BODY = "backbone.body."  # the timm features model's parameters, inside the detector


def detector_config(recipe, *, num_classes: int, for_training: bool) -> dict[str, Any]:
    """The config `build_detector` builds the recipe's detector from (the registered card's
    ``detection``).

    ``for_training``: the detector trains on images the training core has normalised already
    (on the device, `hypernym.data.normalize`), so its own normalisation is the identity;
    registered, it normalises 0-1 images with the recipe's mean and std itself, like any
    torchvision detector. The weights are the same.
    """
    spec, data = recipe.detection, recipe.data
    return {"detector": spec.detector, "arch": recipe.model.arch, "num_classes": num_classes,
            "levels": spec.levels, "fpn_channels": spec.fpn_channels,
            "img_size": data.img_size,
            "mean": [0.0, 0.0, 0.0] if for_training else list(data.mean),
            "std": [1.0, 1.0, 1.0] if for_training else list(data.std),
            # Registered weights run in eval mode, where frozen BatchNorm computes what
            # BatchNorm does: one layout for every registered detector.
            "frozen_bn": spec.frozen_bn if for_training else True,
            "detections_per_image": spec.detections_per_image,
            "score_threshold": spec.score_threshold,
            "timm_kwargs": dict(recipe.model.kwargs)}


def build_detection_model(recipe, *, num_classes: int, backbone: str | None = None,
                          settings: Settings | None = None) -> BuiltModel:
    """The recipe's detector from random init or the registered ``backbone`` (``NAME/VERSION``),
    and its fine-tune plan.

    Raises:
        HypernymError: the backbone is another architecture than ``model.arch``, or
            ``backbone_mode: partial`` asks for more stages than the backbone has.
    """
    config = detector_config(recipe, num_classes=num_classes, for_training=True)
    if backbone is None:
        # torchvision's rule for its detectors: FrozenBatchNorm2d only in a pretrained backbone,
        # whose statistics and affine pretraining learned. A random init's are the init's
        # (timm zero-initialises each residual block's last BatchNorm scale): frozen, every
        # residual branch would stay off for good, so from random init BatchNorm trains.
        config["frozen_bn"] = False
        model = build_detector(config)
    else:
        from hypernym.registry.card import CARD_FILE, WEIGHTS_FILE, ModelCard
        from hypernym.registry.models import pull

        with tempfile.TemporaryDirectory() as tmp:
            local = pull(backbone, tmp, timm_config=False, settings=settings)  # sha256 checked
            card = ModelCard.model_validate_json((local / CARD_FILE).read_text())
            if card.detection:
                raise HypernymError(f"{backbone} is a detector itself: start from the backbone "
                                    f"it was fine-tuned from ({card.parent or 'see its card'})")
            if card.arch != recipe.model.arch:
                raise HypernymError(f"backbone {backbone} is timm {card.arch!r} but model.arch "
                                    f"is {recipe.model.arch!r}: set model.arch: {card.arch}")
            model = build_detector(config, weights=str(local / WEIGHTS_FILE),
                                   weights_classes=card.num_classes)
    return BuiltModel(model, plan_detection(model, recipe.detection,
                                            pretrained=backbone is not None))


def plan_detection(model: torch.nn.Module, spec, *, pretrained: bool = True) -> FinetunePlan:
    """Freeze what ``spec.backbone_mode`` does not train; scale a ``pretrained`` backbone's LR
    (from random init nothing is pretrained: the whole detector trains at the recipe's LR)."""
    body = model.backbone.body
    names = [n for n, _ in model.named_parameters()]
    body_names = [n for n in names if n.startswith(BODY)]
    plan = FinetunePlan()
    if spec.backbone_mode == "frozen":
        trainable = set(names) - set(body_names)
    elif spec.backbone_mode == "partial":
        stages = stage_modules(body)
        if spec.trainable_stages > len(stages):
            raise HypernymError(f"detection.trainable_stages is {spec.trainable_stages}, but "
                                f"the backbone has {len(stages)} stages ({', '.join(stages)})")
        first = f"{BODY}{stages[-spec.trainable_stages]}."
        start = next(i for i, n in enumerate(body_names) if n.startswith(first))
        trainable = set(names) - set(body_names[:start])  # stages run in registration order
    else:
        trainable = set(names)
    if len(trainable) < len(names):
        plan.frozen = freeze_all_but(model, trainable)
    if pretrained and spec.backbone_mode != "frozen" and spec.backbone_lr_scale != 1.0:
        plan.lr_scales = {BODY: spec.backbone_lr_scale}
    return plan
