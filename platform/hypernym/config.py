"""Typed recipes: YAML files validated by pydantic before anything starts.

A recipe has a ``kind`` (``prepare``, ``pretrain``, ``finetune``) and is made of small sections,
each its own model. Unknown keys and wrong types are rejected with the key path and the allowed
keys or values (docs/architecture.md, "Principles"). ``--set a.b=value`` overrides are
applied to the raw mapping and validated with it, so an override cannot smuggle in what a file
could not.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from hypernym.errors import HypernymError
from hypernym.sections import (
    DetectionSpec,
    DistillSpec,
    MultiLabelSpec,
    OptimSpec,
    RegisterSpec,
    detection_refusals,
)

# timm's IMAGENET_DEFAULT_MEAN/STD, repeated so that validating a recipe does not import torch.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Each task's losses (the first is its default) and the validation metric that judges its runs
# (``registry.metric: auto``, a plateau schedule's default metric).
# A detector has its own losses: its recipe keeps train.loss at the default (detection_refusals).
TASK_LOSSES = {"classification": ("ce", "semantic"), "detection": ("ce",),
               "multilabel": ("bce", "asl")}
TASK_METRICS = {"classification": "top1", "detection": "map", "multilabel": "map"}

__all__ = [
    "DataSpec",
    "DetectionSpec",
    "DistillSpec",
    "FinetuneRecipe",
    "ModelSpec",
    "MultiLabelSpec",
    "OptimSpec",
    "PrepareRecipe",
    "PretrainRecipe",
    "Recipe",
    "RegisterSpec",
    "ScalingSpec",
    "TASK_LOSSES",
    "TASK_METRICS",
    "TrainSpec",
    "apply_overrides",
    "load_recipe",
    "parse_recipe",
]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- prepare


class PrepareRecipe(Section):
    """Raw images -> WebDataset shards + manifest.json."""

    kind: Literal["prepare"] = "prepare"
    source: str = Field(
        description="winter21 tar directory, a folder per class, a CSV/JSONL of path,label, an "
        "ILSVRC-2012 release, a PASCAL VOC or COCO layout (paths or s3:// URIs)"
    )
    output: str = Field(description="dataset directory to write (path or s3://)")
    source_format: Literal["auto", "winter21", "folder", "csv", "jsonl", "ilsvrc2012", "voc",
                           "coco"] = Field(
        "auto", description="auto detects the others; ilsvrc2012: the official ImageNet-1K "
        "archives (train tar of synset tars, flat val images, devkit); its val images are the "
        "val split, and val_per_class does not apply; voc, coco: annotated layouts with boxes "
        "(docs/annotations.md)")
    devkit: str | None = Field(
        None, description="ilsvrc2012: the ILSVRC2012_devkit_t12 folder or .tar.gz (validation "
        "labels); default: the one in the source directory")
    boxes: list[str] = Field(
        default_factory=list, description="ImageNet's boxes for a winter21, ilsvrc2012 or "
        "folder source: ILSVRC2012_bbox_train_v2.tar.gz, ILSVRC2012_bbox_val_v3.tgz, the full "
        "release's Annotation/ folder of nXXXXXXXX.tar.gz, or folders of their .xml files; "
        "joined to the images by name")
    label_separator: str | None = Field(
        None, description="csv/jsonl: the string that separates several labels in a row's "
        "labels (or label) field, e.g. '|': the table is then multi-label")
    name: str | None = Field(None, description="dataset name; defaults to the output's basename")
    val_per_class: int = Field(50, ge=0, description="images per class held out for validation")
    # Defaults follow the published ImageNet-21K-P processing (Ridnik et al., 2021).
    min_per_class: int = Field(500, ge=0, description="drop classes with fewer images than this")
    exclude_subtrees: list[str] = Field(
        default_factory=list, description="WordNet synset ids whose whole subtree is left out"
    )
    dedupe: bool = Field(False, description="drop exact duplicate images (by content hash)")
    hierarchy: str | None = Field(
        None, description="for classes that are not synsets: a JSON/YAML file mapping each "
        "class (and inner node) to its parent; the default is a flat hierarchy"
    )
    image_size: int = Field(224, ge=8, description="target size in pixels")
    resize: Literal["squish", "shorter", "none"] = "squish"
    jpeg_quality: int = Field(90, ge=1, le=100)
    shard_samples: int = Field(1000, ge=1, description="samples per shard at most")
    max_bad_fraction: float = Field(
        0.1, ge=0, le=1, description="fail when more source images than this are unusable"
    )
    seed: int = 0
    overwrite: bool = False

    @field_validator("boxes", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # --set boxes=PATH gives a string

    @model_validator(mode="after")
    def _keys_for_their_sources(self) -> PrepareRecipe:
        if self.devkit is not None and self.source_format not in ("ilsvrc2012", "auto"):
            raise ValueError(f"devkit is for source_format ilsvrc2012, not {self.source_format}")
        if self.boxes and self.source_format not in ("auto", "winter21", "ilsvrc2012", "folder"):
            raise ValueError(f"boxes joins ImageNet's boxes to winter21, ilsvrc2012 or folder "
                             f"sources; source_format {self.source_format} carries its own "
                             "annotations or none: drop boxes")
        if any(not b.strip() for b in self.boxes):
            raise ValueError("boxes holds an empty path")
        if self.label_separator is not None:
            if self.source_format not in ("auto", "csv", "jsonl"):
                raise ValueError(f"label_separator is for csv and jsonl tables, not "
                                 f"{self.source_format}")
            if not self.label_separator:
                raise ValueError("label_separator is empty: give the string between labels, "
                                 "e.g. ';' (on the command line quote a |, which YAML reads "
                                 "as a block marker: --set \"label_separator='|'\")")
        return self


# --------------------------------------------------------------------------- training


class DataSpec(Section):
    """Which prepared dataset to stream and how to turn samples into tensors."""

    path: str = Field(description="a prepared dataset directory (path or s3://)")
    img_size: int = Field(224, ge=8)
    batch_size: int = Field(64, ge=1, description="per worker")
    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description="RandomResizedCrop area range (timm's default 0.08-1)"
    )
    rand_augment: tuple[int, int] | None = Field(
        None, description="torchvision RandAugment (num_ops, magnitude) on uint8 images; "
        "None: off")
    mean: tuple[float, float, float] = Field(
        IMAGENET_MEAN, description="per-channel mean of 0-1 pixels, subtracted on the device")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="per-channel std (0-1)")
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per training worker")
    shuffle_buffer: int = Field(
        512, ge=1, description="samples each loader worker shuffles among while it reads "
        "(bounded memory); a larger buffer mixes shards more and reads further ahead")
    decode_on: Literal["loader", "device"] = Field(
        "loader", description="where JPEGs are decoded: in the loader workers, or batched on "
        "the training device (nvJPEG on a GPU; for full-size JPEGs the CPUs can't keep up with)")
    seed: int = 0

    @model_validator(mode="after")
    def _device_decode_alone(self) -> DataSpec:
        if self.decode_on == "device" and self.rand_augment is not None:
            raise ValueError("data.rand_augment runs in the loader workers on decoded images, "
                             "so it can't be combined with data.decode_on: device; drop one")
        return self


class ModelSpec(Section):
    """A timm model by name."""

    arch: str = Field(description="any name from timm.list_models()")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model args")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        names = _timm_model_names()
        if value not in names:
            close = difflib.get_close_matches(value, names, n=5, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown timm model {value!r}.{hint} "
                "See `python -c 'import timm; print(timm.list_models())'` for all names."
            )
        return value


class TrainSpec(Section):
    """The loop's budget, loss, regularisation and numerics (timm's implementations)."""

    epochs: int = Field(10, ge=1)
    loss: Literal["ce", "semantic", "bce", "asl"] = Field(
        "ce", description="classification: ce, softmax cross-entropy; semantic, one softmax per "
        "level of the dataset's class hierarchy (the 21K-P semantic softmax). multilabel "
        "(default bce): bce, binary cross-entropy per class; asl, the asymmetric loss")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0, description="timm Mixup alpha (0: off)")
    cutmix_alpha: float = Field(0.0, ge=0, description="timm CutMix alpha (0: off)")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability to mix a batch")
    mix_switch_prob: float = Field(0.5, ge=0, le=1, description="cutmix instead of mixup")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="model EMA decay (timm ModelEmaV3), e.g. 0.9998; None: off")
    accum_steps: int = Field(1, ge=1, description="batches per optimizer step")
    compile: bool = Field(False, description="torch.compile the model (Module.compile)")
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 on GPU")
    channels_last: bool = False
    grad_clip: float | None = Field(None, gt=0)
    log_every: int = Field(10, ge=1, description="steps between metric logs")
    system_metrics_s: float | None = Field(
        10.0, gt=0, description="seconds between samples of rank 0's node CPU, memory, disk, "
        "network and GPU use (MLflow system/* metrics); null: off")
    checkpoint_every: int = Field(
        0, ge=0, description="steps between mid-epoch checkpoints (0: at epoch ends only); a "
        "resumed run reads exactly the samples of the epoch it had not trained on")
    keep_checkpoints: int = Field(2, ge=1, description="latest checkpoints kept on storage")
    distill: DistillSpec | None = Field(
        None, description="distil the model from a registered teacher, online or from a "
        "teacher store (docs/distillation.md); None: no teacher")


class ScalingSpec(Section):
    """Ray Train's worker group."""

    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    max_failures: int = Field(
        0, ge=-1, description="worker-group restarts from the last checkpoint (-1: no limit)"
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicated model; fsdp: parameters, gradients and optimizer "
        "state sharded over the workers (FSDP2), for models that do not fit one device")


class _TrainRecipe(Section):
    name: str = Field(description="run name; also the Ray Train run directory name")
    experiment: str = "hypernym"
    task: Literal["classification", "detection", "multilabel"] = Field(
        "classification", description="what the model learns (hypernym.train.tasks): "
        "classification, one class per image (train.loss ce or semantic); detection, boxes "
        "and their classes (a fine-tune with a detection section, docs/detection.md); "
        "multilabel, every label of an annotated image (train.loss bce or asl, the multilabel "
        "section)")
    data: DataSpec
    model: ModelSpec
    optim: OptimSpec = Field(default_factory=OptimSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    registry: RegisterSpec = Field(default_factory=RegisterSpec)
    detection: DetectionSpec | None = Field(
        None, description="task detection: the detector and how its backbone trains")
    multilabel: MultiLabelSpec = Field(default_factory=MultiLabelSpec)

    @model_validator(mode="after")
    def _detection_fits(self):
        if self.task != "detection":
            if self.detection is not None:
                raise ValueError("a detection section needs task: detection")
            return self
        refused = detection_refusals(self)
        if refused:
            raise ValueError("task: detection " + "; ".join(refused))
        if self.detection is None:
            self.detection = DetectionSpec()
        if self.registry.metric == "auto":  # detections have no top-1: COCO's mAP judges them
            self.registry.metric = "val_ema/map" if self.registry.weights == "ema" else "val/map"
        if self.optim.sched == "plateau" and "plateau_metric" not in self.optim.model_fields_set:
            self.optim.plateau_metric = "val/map"
        return self

    @model_validator(mode="after")
    def _task_keys(self):
        """The loss and the task's own keys fit the task; ``auto`` metrics become its own."""
        losses, train = TASK_LOSSES[self.task], self.train
        if "loss" not in train.model_fields_set and train.loss not in losses:
            train.loss = losses[0]
        if train.loss not in losses:
            owner = next(t for t, names in TASK_LOSSES.items() if train.loss in names)
            raise ValueError(f"train.loss {train.loss!r} is a loss of task {owner}; task "
                             f"{self.task} takes {' or '.join(losses)}")
        # Keys set to other than their defaults: a resolved recipe carries every key.
        spec, fields = self.multilabel, MultiLabelSpec.model_fields
        own = {k for k in spec.model_fields_set if getattr(spec, k) != fields[k].default}
        if self.task != "multilabel" and own:
            raise ValueError(f"multilabel.{sorted(own)[0]} is a key of task: multilabel, not "
                             f"{self.task}: drop it or set task: multilabel")
        stray = sorted(k for k in own if k.startswith("asl_"))
        if stray and train.loss != "asl":
            raise ValueError(f"multilabel.{stray[0]} tunes train.loss asl, not {train.loss}: "
                             "drop it or set train.loss: asl")
        if self.task == "multilabel":
            if self.data.decode_on == "device":
                raise ValueError("task multilabel decodes in the loader workers, where its crops "
                                 "drop the labels of objects they cut away: set data.decode_on: "
                                 "loader")
        metric = TASK_METRICS[self.task]
        if self.registry.metric == "auto" and self.task != "classification":
            self.registry.metric = f"val{'_ema' if self.registry.weights == 'ema' else ''}/" \
                                   f"{metric}"
        if self.optim.sched == "plateau" and "plateau_metric" not in \
                self.optim.model_fields_set and self.task != "classification":
            self.optim.plateau_metric = f"val/{metric}"
        return self

    @model_validator(mode="after")
    def _consistent(self):
        if self.registry.weights == "ema" and self.train.ema_decay is None:
            raise ValueError("registry.weights is 'ema' but train.ema_decay is not set: set "
                             "train.ema_decay (e.g. 0.9998) or register the model's weights")
        for metric in self.registry.candidates(bool(self.train.ema_decay)).values():
            if not metric.startswith(("val/", "val_ema/")):
                raise ValueError(f"registry.metric must be a validation metric (val/... or "
                                 f"val_ema/...), got {metric!r}")
            if metric.startswith("val_ema/") and not self.train.ema_decay:
                raise ValueError(f"registry.metric {metric!r} needs train.ema_decay")
        if self.optim.sched == "plateau" and self.optim.plateau_metric.startswith("val_ema/") \
                and not self.train.ema_decay:
            raise ValueError("optim.plateau_metric watches the EMA, but train.ema_decay is off")
        if self.optim.cooldown_epochs >= self.train.epochs:
            raise ValueError(f"optim.cooldown_epochs ({self.optim.cooldown_epochs}) must be "
                             f"fewer than train.epochs ({self.train.epochs})")
        if self.train.ema_decay and self.scaling.strategy == "fsdp":
            raise ValueError("train.ema_decay is not supported with scaling.strategy 'fsdp' yet "
                             "(the average would need sharding too): use ddp, or no EMA")
        mixing = self.train.mixup_alpha > 0 or self.train.cutmix_alpha > 0
        if mixing and self.data.batch_size % 2:
            raise ValueError(f"timm's Mixup/CutMix pairs samples within a batch: data.batch_size "
                             f"must be even, got {self.data.batch_size}")
        if min(self.data.std) <= 0:
            raise ValueError(f"data.std must be positive, got {list(self.data.std)}")
        return self


class PretrainRecipe(_TrainRecipe):
    """Train a timm model from scratch on a prepared dataset."""

    kind: Literal["pretrain"] = "pretrain"


class FinetuneRecipe(_TrainRecipe):
    """Start from a registered backbone, replace its head, train on domain data."""

    kind: Literal["finetune"] = "finetune"
    backbone: str | None = Field(
        description="registry reference NAME@alias or NAME/version; null trains from random init"
    )
    mode: Literal["full", "linear", "partial"] = Field(
        "full", description="full: every parameter trains (optim.layer_decay for layer-wise LR "
        "decay); linear: a probe, the backbone frozen in eval mode with fixed BatchNorm "
        "statistics; partial: the last partial_blocks blocks of timm's group matcher + the head")
    partial_blocks: int | None = Field(None, ge=1, description="mode partial: blocks that train")
    head_warmup_epochs: int = Field(
        0, ge=0, description="first train only the new head for this many epochs (the rest "
        "held in eval mode at LR 0), then everything the mode trains")
    head_init: Literal["auto", "random"] = Field(
        "auto", description="auto: when the classes are synsets the backbone's head also has, "
        "the new head starts from those rows of the pretrained head; random: timm's init")

    @model_validator(mode="after")
    def _finetune_modes(self):
        if (self.mode == "partial") != (self.partial_blocks is not None):
            raise ValueError("mode: partial needs partial_blocks (how many of the last blocks "
                             "train), and partial_blocks needs mode: partial")
        if self.head_warmup_epochs and self.mode == "linear":
            raise ValueError("head_warmup_epochs is moot for mode: linear (only the head trains)")
        if self.head_warmup_epochs >= self.train.epochs and "epochs" in \
                self.train.model_fields_set:
            raise ValueError(f"head_warmup_epochs ({self.head_warmup_epochs}) must be fewer "
                             f"than train.epochs ({self.train.epochs})")
        return self


Recipe = Annotated[
    PrepareRecipe | PretrainRecipe | FinetuneRecipe, Field(discriminator="kind")
]
_RECIPE = TypeAdapter(Recipe)
_KINDS = {"prepare": PrepareRecipe, "pretrain": PretrainRecipe, "finetune": FinetuneRecipe}


@functools.cache
def _timm_model_names() -> list[str]:
    import timm  # imported here: timm (and torch) take seconds to import

    return timm.list_models()


# --------------------------------------------------------------------------- loading


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a raw recipe mapping (values parsed as YAML)."""
    out = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise HypernymError(f"--set expects key.path=value, got {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return out


def parse_recipe(raw: Any, *, source: str = "recipe", kind: str | None = None):
    """Validate a raw mapping as a recipe; errors name the key path and what is allowed."""
    if not isinstance(raw, dict):
        raise HypernymError(f"{source}: a recipe is a mapping of keys, got {type(raw).__name__}")
    if kind is not None:
        raw = {"kind": kind, **raw}
    if raw.get("kind") not in _KINDS:
        raise HypernymError(
            f"{source}: 'kind' must be one of {', '.join(_KINDS)}; got {raw.get('kind')!r}"
        )
    try:
        return _RECIPE.validate_python(raw)
    except ValidationError as exc:
        raise HypernymError(_explain(exc, _KINDS[raw["kind"]], source)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, kind=None):
    """Read a YAML recipe, apply ``--set`` overrides, validate: nothing starts before this."""
    path = Path(path)
    if not path.is_file():
        raise HypernymError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HypernymError(f"{path}: not valid YAML: {exc}") from None
    return parse_recipe(apply_overrides(raw, overrides), source=str(path), kind=kind)


def _explain(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid recipe ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p not in _KINDS]  # drop the union tag
        where = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _section_at(model, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "?"
            close = difflib.get_close_matches(loc[-1], list(parent.model_fields) if parent else [])
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  - {where}: unknown key{hint}; allowed keys: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"  - {where}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = f" (got {err.get('input')!r})" if loc else ""  # not the whole recipe again
            lines.append(f"  - {where}: {msg}{got}")
    return "\n".join(lines)


def _section_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        # An optional section (`Spec | None`): the section's own model.
        ann = next((a for a in getattr(ann, "__args__", ()) if isinstance(a, type)
                    and issubclass(a, BaseModel)), ann)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model
