"""The ``optim``, ``registry``, ``train.distill``, ``detection`` and ``multilabel`` sections
of a training recipe.

``optim``: timm's optimizer and scheduler, with each scheduler's own keys.

timm's ``create_scheduler_v2`` reads a different subset of its arguments for each schedule (a
decay interval for ``step``, milestones for ``multistep``, a patience for ``plateau``...). A recipe
names only the keys of the schedule it picks: a key the schedule would silently ignore is an
error, so ``sched: step`` with ``decay_milestones`` is caught before anything starts.

``registry``: where the trained model goes, and which weights (model or EMA, which epoch).

``train.distill``: the teacher (a registry reference, or a teacher store) and the loss.

``detection``: the detector of a ``task: detection`` fine-tune and how its backbone trains.

``multilabel``: the keys of ``task: multilabel`` (its threshold, its crops, the asymmetric loss).

Kept apart from config.py so that each file stays small; ``hypernym.config`` re-exports them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["SCHEDULES", "SCHEDULE_KEYS", "DetectionSpec", "DistillSpec", "MultiLabelSpec",
           "OptimSpec", "RegisterSpec", "detection_refusals"]

# The schedules of timm.scheduler.create_scheduler_v2 (timm 1.0.31) a recipe may name.
SCHEDULES = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "wsd", "rsqrt",
             "constant", "none")
_CYCLIC = {"cosine", "tanh", "poly"}
# Which schedules read which key (from create_scheduler_v2's body); the rest ignore it.
SCHEDULE_KEYS: dict[str, set[str]] = {
    "decay_epochs": {"step", "wsd", "rsqrt"},
    "decay_rate": {"step", "multistep", "plateau", "poly"},
    "decay_milestones": {"multistep"},
    "patience_epochs": {"plateau"},
    "plateau_metric": {"plateau"},
    "cooldown_epochs": _CYCLIC,
    "cycle_limit": _CYCLIC,
    "cycle_mul": _CYCLIC,
    "cycle_decay": _CYCLIC,
    "k_decay": {"cosine", "poly"},
}


class OptimSpec(BaseModel):
    """timm optimizer and scheduler settings (timm.optim / timm.scheduler do the work)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    opt: str = Field("adamw", description="timm optimizer name")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="layer-wise LR decay: each layer of the model's timm "
        "group matcher gets layer_decay ** (layers above it) of the LR, the head 1")
    sched: Literal[SCHEDULES] = "cosine"  # type: ignore[valid-type]
    warmup_epochs: int = Field(0, ge=0)
    warmup_lr: float | None = Field(None, ge=0, description="LR at the start of warmup "
                                    "(None: min_lr)")
    min_lr: float = Field(1e-6, ge=0)
    # --- keys that only some schedules read (SCHEDULE_KEYS says which)
    decay_epochs: float | None = Field(
        None, gt=0, description="step: epochs between decays (timm's default 90); wsd/rsqrt: "
        "length of the decay phase in epochs, or a fraction of the schedule if below 1")
    decay_rate: float = Field(0.1, gt=0, description="step/multistep/plateau: LR factor at "
                              "each decay; poly: the polynomial's power")
    decay_milestones: list[int] = Field(
        default_factory=lambda: [30, 60, 90], description="multistep: epochs to decay at")
    patience_epochs: int = Field(10, ge=0, description="plateau: epochs without improvement "
                                 "before a decay")
    plateau_metric: str = Field(
        "val/top1", description="plateau: the validation metric it watches; a metric named "
        "*loss is minimised, any other maximised")
    cooldown_epochs: int = Field(0, ge=0, description="cosine/tanh/poly: the last epochs of "
                                 "train.epochs held at min_lr after the schedule ends")
    cycle_limit: int = Field(1, ge=1, description="cosine/tanh/poly: number of cycles")
    cycle_mul: float = Field(1.0, gt=0, description="cosine/tanh/poly: cycle length factor")
    cycle_decay: float = Field(0.1, gt=0, description="cosine/tanh/poly: LR factor per cycle")
    k_decay: float = Field(1.0, gt=0, description="cosine/poly: k-decay")

    @property
    def plateau_mode(self) -> str:
        """``min`` for a loss, ``max`` for anything else (accuracies)."""
        return "min" if self.plateau_metric.endswith("loss") else "max"

    @model_validator(mode="after")
    def _own_keys(self) -> OptimSpec:
        # Only keys set to something other than their default: a resolved recipe (written by
        # `hypernym submit`, the demo, MLflow's recipe.json) carries every key at its default.
        fields = type(self).model_fields
        stray = sorted(k for k in self.model_fields_set & SCHEDULE_KEYS.keys()
                       if self.sched not in SCHEDULE_KEYS[k]
                       and getattr(self, k) != fields[k].get_default(call_default_factory=True))
        if stray:
            uses = "; ".join(f"{k}: {', '.join(sorted(SCHEDULE_KEYS[k]))}" for k in stray)
            raise ValueError(f"sched {self.sched!r} does not read {', '.join(stray)} (read by "
                             f"{uses}): drop the key or pick a schedule that uses it")
        if sorted(set(self.decay_milestones)) != self.decay_milestones:
            raise ValueError(f"decay_milestones must be distinct and increasing, got "
                             f"{self.decay_milestones}")
        if self.sched == "plateau" and not self.plateau_metric.startswith(("val/", "val_ema/")):
            raise ValueError(f"plateau_metric must be a validation metric (val/... or "
                             f"val_ema/...), got {self.plateau_metric!r}")
        return self


class RegisterSpec(BaseModel):
    """Where the trained model goes in the MLflow model registry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str | None = Field(None, description="registered model name; None skips registration")
    alias: str | None = Field("candidate", description="alias set on the new version")
    weights: Literal["auto", "model", "ema"] = Field(
        "auto", description="which weights to register; auto: whichever of the model and its "
        "EMA (train.ema_decay) scores better on `metric` at the selected epoch")
    select: Literal["last", "best"] = Field(
        "last", description="register the last epoch's weights, or the best epoch's by `metric`")
    metric: str = Field(
        "auto", description="validation metric that compares epochs (select: best) and, with "
        "weights auto, the model against its EMA; auto: val/top1 (val_ema/top1 for weights: ema)")
    mode: Literal["max", "min"] = Field("max", description="whether a higher `metric` is better")

    def candidates(self, ema: bool) -> dict[str, str]:
        """The weights in the running (``model``/``ema``), each with the metric that judges it.

        With ``weights: auto`` and an EMA, both run, on the same metric of their own
        validation pass (``val/top1`` against ``val_ema/top1``).
        """
        if self.weights == "auto" and ema:
            suffix = (self.metric if self.metric != "auto" else "val/top1").split("/", 1)[-1]
            return {"model": f"val/{suffix}", "ema": f"val_ema/{suffix}"}
        kind = "model" if self.weights == "auto" else self.weights
        default = "val_ema/top1" if kind == "ema" else "val/top1"
        return {kind: default if self.metric == "auto" else self.metric}

    def choose(self, metrics: dict[str, float], ema: bool) -> dict[str, Any] | None:
        """Which weights an epoch with these validation ``metrics`` offers: the candidate that
        scores best (the model on a tie), as ``{kind, metric, value, candidates}``; None when
        no candidate's metric was measured (no validation split)."""
        scored = {kind: (metric, float(metrics[metric]))
                  for kind, metric in self.candidates(ema).items() if metric in metrics}
        if not scored:
            return None
        pick = (max if self.mode == "max" else min)(scored, key=lambda k: scored[k][1])
        return {"kind": pick, "metric": scored[pick][0], "value": scored[pick][1],
                "candidates": {kind: value for kind, (_, value) in scored.items()}}

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in "/:@"):
            raise ValueError(f"registered model names cannot contain '/', ':' or '@': {value!r}")
        return value

    @field_validator("alias")
    @classmethod
    def _valid_alias(cls, value: str | None) -> str | None:
        # MLflow reserves these two alias forms for its own lookups.
        if value is not None and (value == "latest" or (value[:1] == "v" and value[1:].isdigit())):
            raise ValueError(f"alias {value!r} is reserved by MLflow; pick another")
        return value


class DetectionSpec(BaseModel):
    """A ``task: detection`` fine-tune: a torchvision detector on the backbone's timm features
    joined by an FPN (docs/detection.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    detector: Literal["fcos", "retinanet", "fasterrcnn"] = Field(
        "fcos", description="torchvision's FCOS or RetinaNet (one stage), or Faster R-CNN "
        "(two stages)")
    backbone_mode: Literal["frozen", "partial", "full"] = Field(
        "full", description="frozen: only the FPN and the detector's heads train; partial: "
        "also the backbone's last trainable_stages stages; full: every layer, the backbone at "
        "backbone_lr_scale of the LR")
    trainable_stages: int | None = Field(
        None, ge=1, description="backbone_mode partial: the backbone's last stages that train")
    backbone_lr_scale: float = Field(
        0.1, gt=0, le=1, description="a pretrained backbone's LR as a fraction of optim.lr "
        "(the FPN and the heads train at optim.lr; from random init, everything does)")
    frozen_bn: bool = Field(
        True, description="a pretrained backbone's BatchNorm with fixed statistics and affine "
        "(FrozenBatchNorm2d), as torchvision's references fine-tune detectors; from random "
        "init BatchNorm trains (torchvision's builders do the same)")
    levels: int | None = Field(
        None, ge=2, le=5, description="backbone stages the FPN reads (default: 3 for fcos and "
        "retinanet, plus P6 and P7; 4 for fasterrcnn, plus a pooled level)")
    fpn_channels: int = Field(256, ge=8, description="channels of every FPN level")
    crop: Literal["none", "resized", "iou"] = Field(
        "none", description="training crop before the resize to data.img_size: none "
        "(torchvision's references: flip only), resized (RandomResizedCrop over "
        "data.crop_scale), iou (SSD's RandomIoUCrop)")
    flip: bool = Field(True, description="random horizontal flips in training")
    min_box_size: float = Field(
        1.0, ge=0, description="training boxes narrower or lower than this many pixels after "
        "the augmentation are dropped")
    score_threshold: float = Field(
        0.3, ge=0, le=1, description="the registered model's default: served detections "
        "below this score are left out (evaluation scores every detection)")
    detections_per_image: int = Field(100, ge=1, description="detections kept per image")

    @model_validator(mode="after")
    def _partial_stages(self) -> DetectionSpec:
        if (self.backbone_mode == "partial") != (self.trainable_stages is not None):
            raise ValueError("backbone_mode: partial needs trainable_stages (how many of the "
                             "backbone's last stages train), and trainable_stages needs "
                             "backbone_mode: partial")
        if self.detector == "fcos" and self.fpn_channels % 32:
            raise ValueError(f"fpn_channels is {self.fpn_channels}: FCOS's heads normalise "
                             "with GroupNorm of 32 groups, so use a multiple of 32")
        return self


def detection_refusals(recipe) -> list[str]:
    """What a ``task: detection`` recipe sets that detection cannot do, each with the fix."""
    train, data, out = recipe.train, recipe.data, []
    if recipe.kind != "finetune":
        out.append("is a fine-tune: use kind: finetune (backbone: null trains a detector from "
                   "random init)")
    if train.mixup_alpha > 0 or train.cutmix_alpha > 0:
        out.append("cannot use Mixup or CutMix: they blend images and their labels, and a "
                   "box cannot be blended; set train.mixup_alpha and train.cutmix_alpha to 0")
    if train.loss != "ce" or train.label_smoothing:
        out.append("has its detector's own losses: drop train.loss and train.label_smoothing")
    if data.decode_on != "loader" or data.rand_augment is not None:
        out.append("augments boxes with the images in the loader (detection.crop, "
                   "detection.flip): drop data.decode_on: device and data.rand_augment")
    if recipe.optim.layer_decay is not None:
        out.append("sets the backbone's LR with detection.backbone_lr_scale: drop "
                   "optim.layer_decay")
    if recipe.scaling.strategy != "ddp":
        out.append("trains with scaling.strategy ddp")
    if getattr(recipe, "mode", "full") != "full" or getattr(recipe, "head_warmup_epochs", 0):
        out.append("says what trains in detection.backbone_mode (frozen, partial, full): "
                   "drop mode, partial_blocks and head_warmup_epochs")
    return out


class MultiLabelSpec(BaseModel):
    """The keys of ``task: multilabel`` (several labels per image, one sigmoid per class)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    threshold: float = Field(
        0.5, gt=0, lt=1, description="the probability from which a label counts as predicted "
        "(validation F1); the registered model answers with per-class thresholds tuned on "
        "validation, this one for classes without a positive validation image")
    min_visible: float = Field(
        0.5, ge=0, le=1, description="training crops: a label whose boxes all keep less than "
        "this share of their area inside the crop leaves the sample's target (labels without "
        "boxes always stay); 0 keeps every label")
    # timm's AsymmetricLossMultiLabel defaults (Ridnik et al., ICCV 2021)
    asl_gamma_neg: float = Field(4.0, ge=0, description="loss asl: focusing of the negatives")
    asl_gamma_pos: float = Field(1.0, ge=0, description="loss asl: focusing of the positives")
    asl_clip: float = Field(0.05, ge=0, lt=1, description="loss asl: probability margin that "
                            "discards easy negatives (0: off)")


class DistillSpec(BaseModel):
    """Knowledge distillation of the student from a registered teacher (``train.distill``;
    docs/distillation.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    teacher: str | None = Field(
        None, description="the teacher's registry reference (NAME, NAME@alias, NAME/VERSION): "
        "run online, on every training batch")
    store: str | None = Field(
        None, description="a teacher store (path or s3://) written by `hypernym distill store`: "
        "its stored views and soft labels are replayed and the teacher never runs")
    loss: Literal["kl", "semantic", "semantic_kl"] = Field(
        "kl", description="kl: Hinton's KL at temperature T, times T^2; semantic: MIIL's "
        "semantic KD (per-level squared error weighted by the teacher's confidence); "
        "semantic_kl: KL per semantic level, with the semantic softmax's level weights")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of kl and "
                               "semantic_kl (semantic is defined at 1)")
    alpha: float = Field(
        0.5, ge=0, lt=1, description="weight of the hard-label loss; the teacher's loss gets "
        "1 - alpha (0: the teacher alone)")

    @model_validator(mode="after")
    def _source(self) -> DistillSpec:
        if self.teacher is None and self.store is None:
            raise ValueError("set a teacher (a registry reference, run online) or a store "
                             "(written by `hypernym distill store`)")
        if self.loss == "semantic" and self.temperature != 1.0:
            raise ValueError("loss semantic is MIIL's semantic KD, defined at temperature 1; "
                             "use loss semantic_kl for a temperature")
        return self
