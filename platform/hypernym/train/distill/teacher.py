"""The teacher: a registered model, pinned to a version, checked against the student's classes,
and run frozen on the training device.

`TeacherSpec` is what the driver resolves (a small picklable record: reference, weights sha256,
architecture, input size and normalisation, the permutation of its outputs into the student's
class order); `Teacher` is the loaded model on a worker. The weights come through the registry
(`hypernym.registry.models.load_backbone`: safetensors, sha256 checked against the version), are
never wrapped by DDP or FSDP, never train, and stay in eval mode, so BatchNorm statistics and
dropout are the teacher's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hypernym.errors import HypernymError
from hypernym.settings import Settings
from hypernym.taxonomy import semantic_paths

__all__ = ["Teacher", "TeacherSpec", "class_order", "resolve_teacher"]

_SHOWN = 5  # classes named in a mismatch error


@dataclass(frozen=True)
class TeacherSpec:
    """A registered teacher, pinned and checked in the driver.

    Attributes:
        ref: ``NAME/VERSION`` (an alias is resolved once: it may move during a run).
        sha256: the registered weights' sha256.
        arch: its timm architecture.
        num_classes: its classifier's width.
        input_size: the side it was trained at.
        mean, std: its input normalisation (0-1 pixels).
        order: for each student class, the teacher's output index (None: the same order).
    """

    ref: str
    sha256: str
    arch: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    order: tuple[int, ...] | None = None

    def describe(self) -> str:
        return f"teacher {self.ref} (timm {self.arch}, {self.num_classes} classes)"


def resolve_teacher(ref: str, dataset, *, loss: str, student: str,
                    settings: Settings) -> TeacherSpec:
    """Pin ``ref`` to a version, read its card, and check that it can teach ``dataset``'s
    classes with ``loss``.

    Args:
        student: how the student is named in errors (``recipe NAME: timm ARCH``).

    Raises:
        HypernymError: the reference does not resolve; the classes are not the same set; for
            the semantic losses, another hierarchy; for ``kl``, a teacher trained with the
            semantic softmax (its logits are per-level softmaxes, not one distribution).
    """
    from hypernym.registry.models import fetch_card, resolve

    version = resolve(ref, settings=settings)
    pinned = f"{version.name}/{version.version}"
    card = fetch_card(pinned, settings=settings)
    label = f"the teacher {pinned} (timm {card.arch}, {card.num_classes} classes)"
    order = class_order([c["id"] for c in card.classes], dataset, teacher=label,
                        student=student)
    if loss == "kl" and card.loss == "semantic":
        raise HypernymError(
            f"{label} was trained with the semantic softmax (one softmax per hierarchy level), "
            f"so one softmax over all its logits is not its prediction; distil {student} with "
            "train.distill.loss: semantic or semantic_kl")
    if loss != "kl":
        check_hierarchy(card.hierarchy.get("class_paths") or {}, dataset, teacher=label,
                        student=student)
    if not card.weights_sha256:
        raise HypernymError(f"{label} was registered without a weights sha256, so its weights "
                            "cannot be verified: register the teacher again")
    _, height, _ = card.input_size
    return TeacherSpec(ref=pinned, sha256=card.weights_sha256, arch=card.arch,
                       num_classes=card.num_classes, input_size=height,
                       mean=tuple(card.mean), std=tuple(card.std), order=order)


def class_order(teacher_ids: list[str], dataset, *, teacher: str,
                student: str) -> tuple[int, ...] | None:
    """For each of the dataset's classes, its index among the teacher's outputs; None when the
    two lists are the same in the same order.

    Raises:
        HypernymError: the two class lists are not the same set (naming both models and some
            of the classes that differ).
    """
    student_ids = dataset.class_ids
    if teacher_ids == student_ids:
        return None
    missing = [c for c in student_ids if c not in set(teacher_ids)]
    extra = [c for c in teacher_ids if c not in set(student_ids)]
    if missing or extra or len(set(teacher_ids)) != len(teacher_ids):
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the student's classes are not the teacher's "
                         f"({_some(missing)})")
        if extra:
            parts.append(f"{len(extra)} of the teacher's classes are not the student's "
                         f"({_some(extra)})")
        raise HypernymError(
            f"{teacher} cannot teach {student} on dataset {dataset.name!r} "
            f"({len(student_ids)} classes): a teacher must have the student's classes; "
            + ("; ".join(parts) or "the teacher lists a class twice")
            + ". Pick a teacher trained on this dataset's classes")
    where = {c: i for i, c in enumerate(teacher_ids)}
    return tuple(where[c] for c in student_ids)


def _some(classes: list[str]) -> str:
    return ", ".join(classes[:_SHOWN]) + (", ..." if len(classes) > _SHOWN else "")


def check_hierarchy(teacher_paths: dict, dataset, *, teacher: str, student: str) -> None:
    """The semantic losses compare level by level: the teacher's semantic paths must be the
    dataset's."""
    ours = (dataset.manifest.hierarchy or {}).get("class_paths") or {}
    mine = semantic_paths(ours) if ours else {}
    theirs = semantic_paths({c: p for c, p in teacher_paths.items() if c in mine}) \
        if teacher_paths else {}
    differ = [c for c in dataset.class_ids if mine.get(c) != theirs.get(c)]
    if differ:
        c = differ[0]
        raise HypernymError(
            f"{teacher} cannot teach {student} with a semantic loss: its class hierarchy is "
            f"not that of dataset {dataset.name!r} ({len(differ)} classes differ; {c}: "
            f"{' > '.join(theirs.get(c) or ['no path'])} for the teacher, "
            f"{' > '.join(mine.get(c) or ['no path'])} for the student). Use "
            "train.distill.loss: kl, or a teacher trained on this hierarchy")


class Teacher:
    """A loaded teacher on one device: frozen, in eval mode, outside any DDP/FSDP wrapper.

    Its forward takes the student's normalised batch: it undoes the student's normalisation
    and applies the teacher's when they differ, resizes on the device when the input sizes
    differ, and returns logits in the student's class order.
    """

    def __init__(self, spec: TeacherSpec, *, device: torch.device, settings: Settings,
                 student_size: int, student_mean, student_std,
                 channels_last: bool = False) -> None:
        from hypernym.registry.models import load_backbone

        model = load_backbone(spec.ref, settings=settings)
        loaded = model.hypernym_card.weights_sha256
        if loaded != spec.sha256:
            raise HypernymError(f"{spec.ref} now has weights {loaded[:16]}..., not the "
                                f"{spec.sha256[:16]}... pinned when the run started")
        model.requires_grad_(False)
        model = model.to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.spec, self.model, self.size = spec, model, spec.input_size
        self.resize = spec.input_size != student_size
        self.order = (torch.tensor(spec.order, device=device)
                      if spec.order is not None else None)
        s_mean, s_std = (torch.tensor(v, device=device).view(1, 3, 1, 1)
                         for v in (student_mean, student_std))
        t_mean, t_std = (torch.tensor(v, device=device).view(1, 3, 1, 1)
                         for v in (spec.mean, spec.std))
        # x_teacher = (x * s_std + s_mean - t_mean) / t_std = x * scale + shift
        self.scale, self.shift = s_std / t_std, (s_mean - t_mean) / t_std
        self.renormalize = not (torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B x student classes) logits of the teacher for a normalised student batch."""
        if self.renormalize:
            images = images * self.scale + self.shift
        if self.resize:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                   antialias=True, align_corners=False)
        logits = self.model(images)
        return logits if self.order is None else logits[:, self.order]
