"""Knowledge distillation on top of a classification task (``train.distill`` in a recipe).

The student is the base task's model, with its codec, mixing, hard loss and metrics; this task
adds the teacher. Online (``train.distill.teacher``), the teacher runs inside `loss`, on the very
batch the student sees after `mix`: the same crops, flips and Mixup/CutMix (consistent teaching,
Beyer et al., CVPR 2022). Offline (``train.distill.store``), the codec replays a teacher store
(`hypernym.train.distill.codec`): each sample comes with the crop the teacher saw and its soft
label, and the teacher never runs; Mixup/CutMix then mix the stored soft labels with the same
draw as the images (the teacher did not see the mixed image: a linear approximation of its
answer).

The loss is ``alpha * hard + (1 - alpha) * distillation``; both parts are logged
(``train/loss_hard``, ``train/loss_distill``, each with its weight). Validation adds the
teacher-student top-1 agreement and the teacher's own top-1 to the base task's figures.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from timm.data import Mixup

from hypernym.settings import Settings, get_settings
from hypernym.train.distill.codec import StoreCodec, StoreTarget, densify
from hypernym.train.distill.losses import DistillLoss
from hypernym.train.distill.store_format import StoreManifest, level_layout
from hypernym.train.distill.teacher import Teacher, TeacherSpec
from hypernym.train.distributed import all_reduce_sum
from hypernym.train.tasks.base import Task
from hypernym.train.tasks.classification import ClassificationTask

__all__ = ["DistillMeter", "DistillTask", "Prediction", "TeacherTarget"]


class TeacherTarget(NamedTuple):
    """A batch's targets on the device, from a teacher store: the hard target (class indices,
    or soft rows once mixed), the teacher's probabilities (B x C), its confidence per level
    (semantic stores, else None) and its stored top-1 class (evaluation crops; -1 for
    training views)."""

    hard: torch.Tensor
    teacher: torch.Tensor
    conf: torch.Tensor | None
    top1: torch.Tensor


class Prediction(NamedTuple):
    """A validation batch's student logits, and the online teacher's top-1 (None offline)."""

    logits: torch.Tensor
    teacher_top1: torch.Tensor | None


class DistillTask(Task):
    """A classification task distilled from a teacher (online) or a teacher store (offline).

    Args:
        base: the student's task (its model, codec, mixing, hard loss, meter).
        loss: the distillation loss.
        alpha: the hard loss's weight; the distillation loss gets ``1 - alpha``.
        teacher: the pinned teacher (online), or None.
        store, store_manifest: the teacher store (offline), or None.
        student: the data settings the teacher's input is made from (``img_size``, ``mean``,
            ``std``, ``channels_last``), the run's ``seed`` and ``shuffle_buffer``.
        settings: where the registry is (workers load the teacher through it).
    """

    def __init__(self, *, base: ClassificationTask, loss: DistillLoss, alpha: float,
                 teacher: TeacherSpec | None = None, store: str | None = None,
                 store_manifest: StoreManifest | None = None, student: dict[str, Any],
                 settings: Settings | None = None) -> None:
        assert (teacher is None) != (store is None), "a teacher or a store, not both"
        self.base, self.kd, self.alpha = base, loss, alpha
        self.teacher, self.store, self.store_manifest = teacher, store, store_manifest
        self.student, self.settings = student, settings or get_settings()
        self.name, self.num_outputs = f"{base.name}+distill", base.num_outputs
        self._teacher: Teacher | None = None
        self._layout: tuple[torch.Tensor, torch.Tensor] | None = None
        self._mixup: Mixup | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_recipe(cls, recipe, dataset, *, base) -> DistillTask:
        """The recipe's ``train.distill`` on top of ``base``, checked in the driver.

        Raises:
            HypernymError: a base task that is not single-label classification, a teacher
                whose classes (or hierarchy) are not the student's, a store written for
                another dataset, teacher or loss, or settings the store cannot replay.
        """
        from hypernym.train.distill.setup import check_recipe

        return cls(base=base, **check_recipe(recipe, dataset, base=base))

    def __getstate__(self) -> dict[str, Any]:
        # What setup() loads stays on its worker.
        return {**self.__dict__, "_teacher": None, "_layout": None, "_last": None}

    # ---- data
    def codec(self):
        if self.store is None:
            return self.base.codec()
        return StoreCodec(store=self.store, manifest=self.store_manifest,
                          seed=self.student["seed"], img_size=self.student["img_size"],
                          shuffle_buffer=self.student["shuffle_buffer"])

    def batch_labels(self, target) -> torch.Tensor:
        return target.labels if isinstance(target, StoreTarget) else target

    # ---- the model: the student's
    def build_model(self, recipe, **kwargs):
        return self.base.build_model(recipe, **kwargs)

    def export_model(self, recipe) -> torch.nn.Module:
        return self.base.export_model(recipe)

    def setup(self, device: torch.device) -> None:
        """The base task's setup, then the teacher, loaded once per worker (online), or the
        store's level layout (offline)."""
        self.base.setup(device)
        self.kd = self.kd.to(device)
        if self.store_manifest is not None:
            m = self.store_manifest
            self._layout = tuple(t.to(device) for t in level_layout(m.levels, m.topk,
                                                                    m.num_classes))
            self._mixup = self._joint_mixup()
        elif self._teacher is None or self._teacher.scale.device != device:
            s = self.student
            self._teacher = Teacher(self.teacher, device=device, settings=self.settings,
                                    student_size=s["img_size"], student_mean=s["mean"],
                                    student_std=s["std"], channels_last=s["channels_last"])

    # ---- training
    def target_to(self, target, device: torch.device):
        if not isinstance(target, StoreTarget):
            return self.base.target_to(target, device)
        target = StoreTarget(*(t.to(device, non_blocking=True) for t in target))
        return TeacherTarget(target.labels, densify(target, *self._layout),
                             target.conf if target.conf.shape[1] else None, target.top1)

    def mix(self, images: torch.Tensor, target):
        if not isinstance(target, TeacherTarget):
            return self.base.mix(images, target)  # online: the teacher sees the mixed batch
        if self._mixup is None:
            return images, target
        return self._mix_stored(images, target)

    def loss(self, model, images, target) -> dict[str, torch.Tensor]:
        student = model(images)
        stored = isinstance(target, TeacherTarget)
        parts = {}
        if self.alpha > 0:
            parts["hard"] = self.alpha * self.base.loss_fn(student, target.hard if stored
                                                           else target)
        # Stored probabilities as log-probabilities (what the losses take); the floor keeps the
        # columns of no semantic level (0, read by no loss) finite.
        teacher = target.teacher.clamp(min=1e-12).log() if stored else self._teacher(images)
        parts["distill"] = (1 - self.alpha) * self.kd(student, teacher,
                                                      target.conf if stored else None)
        return parts

    # ---- evaluation
    def predict(self, model, images) -> Prediction:
        logits = model(images)
        if self._teacher is None:
            return Prediction(logits, None)
        # The model and its EMA are validated on the same batch: run the teacher once.
        if self._last is None or self._last[0] is not images:
            self._last = (images, self._teacher(images).argmax(dim=1))
        return Prediction(logits, self._last[1])

    def meter(self, device: torch.device) -> DistillMeter:
        return DistillMeter(self.base.meter(device), device)

    def lineage(self) -> dict[str, str]:
        """The teacher (reference, architecture, weights sha256), the loss, and the store."""
        if self.store_manifest is not None:
            m = self.store_manifest
            out = {"teacher": m.teacher, "teacher_arch": m.teacher_arch,
                   "teacher_sha256": m.teacher_sha256, "distill_store": self.store,
                   "distill_store_fingerprint": m.fingerprint}
        else:
            t = self.teacher
            out = {"teacher": t.ref, "teacher_arch": t.arch, "teacher_sha256": t.sha256}
        out.update(distill_loss=self.kd.kind, distill_alpha=f"{self.alpha:g}",
                   distill_temperature=f"{self.kd.temperature:g}")
        return out

    # ---- the store's soft labels under Mixup/CutMix
    def _joint_mixup(self) -> Mixup | None:
        """A Mixup with the base task's settings that mixes any dense rows (multi-label mode,
        no smoothing): the hard targets, the teacher's probabilities and its confidences are
        mixed with the same draw as the images."""
        m = self.base.mixup
        if m is None:
            return None
        width = 2 * self.num_outputs + (len(self.store_manifest.levels)
                                        if self.store_manifest.kind == "semantic" else 0)
        return Mixup(mixup_alpha=m.mixup_alpha, cutmix_alpha=m.cutmix_alpha,
                     cutmix_minmax=m.cutmix_minmax, prob=m.mix_prob, switch_prob=m.switch_prob,
                     mode=m.mode, correct_lam=m.correct_lam, label_smoothing=0.0,
                     num_classes=width, multi_label=True)

    def _mix_stored(self, images: torch.Tensor, t: TeacherTarget):
        classes, smoothing = self.num_outputs, self.base.mixup.label_smoothing
        hard = F.one_hot(t.hard, classes).float() * (1 - smoothing) + smoothing / classes
        rows = [hard, t.teacher] + ([t.conf.float()] if t.conf is not None else [])
        images, mixed = self._mixup(images, torch.cat(rows, dim=1))
        conf = mixed[:, 2 * classes:] if t.conf is not None else None
        return images, TeacherTarget(mixed[:, :classes], mixed[:, classes:2 * classes], conf,
                                     t.top1)


class DistillMeter:
    """The base task's figures, plus ``teacher_agreement`` (the share of samples where the
    student's top-1 is the teacher's) and ``teacher_top1`` (the teacher's accuracy)."""

    def __init__(self, base, device: torch.device) -> None:
        self.base = base
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)

    def update(self, outputs: Prediction, target) -> None:
        labels = target.hard if isinstance(target, TeacherTarget) else target
        teacher = outputs.teacher_top1
        if teacher is None and isinstance(target, TeacherTarget):
            teacher = target.top1
        self.base.update(outputs.logits, labels)
        if teacher is not None:
            row = [(outputs.logits.argmax(dim=1) == teacher).sum(), (teacher == labels).sum(),
                   torch.tensor(len(labels))]
            self.totals += torch.stack([v.to(self.totals.device, torch.float64) for v in row])

    def compute(self) -> dict[str, float]:
        out = self.base.compute()
        agree, right, count = all_reduce_sum(self.totals.clone()).tolist()
        if count:
            out.update(teacher_agreement=agree / count, teacher_top1=right / count)
        return out
