"""The training budget of a fine-tune whose recipe sets none: BiT-HyperRule.

Kolesnikov et al., "Big Transfer (BiT): General Visual Representation Learning" (ECCV 2020),
choose a fine-tune's length and regularisation from the dataset's size alone: fewer than 20k
training images train for 500 steps, fewer than 500k for 10k steps, larger ones for 20k; MixUp
(alpha 0.1) only from 20k images up. Their steps are optimizer updates at batch 512; here they are
the run's own optimizer updates (workers x ``data.batch_size`` x ``train.accum_steps`` images
each), rounded up to whole epochs. The rule applies only when the recipe leaves ``train.epochs``
unset; MixUp only when it also leaves ``mixup_alpha`` and ``cutmix_alpha`` unset.
"""

from __future__ import annotations

import logging
import math

from hypernym.config import apply_overrides, parse_recipe

__all__ = ["bit_hyperrule", "bit_steps"]

log = logging.getLogger(__name__)


def bit_steps(train_images: int) -> tuple[int, float]:
    """BiT-HyperRule's (optimizer steps, mixup alpha) for a training set of this size."""
    if train_images < 20_000:
        return 500, 0.0
    return (10_000 if train_images < 500_000 else 20_000), 0.1


def bit_hyperrule(recipe, *, train_images: int, updates_per_epoch: int):
    """``recipe`` with BiT-HyperRule's budget when it is a fine-tune without ``train.epochs``.

    Returns:
        (recipe, note): the recipe to run, and a one-line note of what the rule chose (None when
        the recipe set its own budget).
    """
    if recipe.kind != "finetune" or "epochs" in recipe.train.model_fields_set:
        return recipe, None
    steps, mixup = bit_steps(train_images)
    epochs = max(1, math.ceil(steps / max(updates_per_epoch, 1)))
    overrides = [f"train.epochs={epochs}"]
    mixing = {"mixup_alpha", "cutmix_alpha"} & recipe.train.model_fields_set
    if mixup and not mixing:
        overrides.append(f"train.mixup_alpha={mixup}")
    raw = {**recipe.model_dump(mode="json", exclude_unset=True), "kind": recipe.kind}
    resolved = parse_recipe(apply_overrides(raw, overrides), source="BiT-HyperRule budget")
    note = (f"BiT-HyperRule budget: {train_images} training images -> {steps} steps = {epochs} "
            f"epochs of {updates_per_epoch} updates; mixup alpha "
            f"{resolved.train.mixup_alpha:g}{' (set by the recipe)' if mixing else ''}")
    log.info(note)
    return resolved, note
