"""Fine-tuning modes on one process: a linear probe that is truly frozen, partial fine-tuning by
timm's group matcher, layer-wise LR decay from the first step, the head warm-up, and the head
started from a pretrained head's rows."""

from __future__ import annotations

import pytest
import timm
import torch

from hypernym.config import parse_recipe
from hypernym.errors import HypernymError
from hypernym.train.finetune import train_mode
from hypernym.train.model import build_classifier, build_optimizer
from hypernym.train.schedulers import build_scheduler
from tests.unit.train.helpers import tiny_trainer

CLASSES = 3


def batches(n: int = 3, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=gen),
             torch.randint(0, CLASSES, (size,), generator=gen)) for _ in range(n)]


def finetune(**keys):
    """A fine-tune recipe from random init with these top-level keys."""
    return parse_recipe({"kind": "finetune", "name": "t", "backbone": None,
                         "data": {"path": "unused"}, "model": {"arch": "resnet10t"},
                         "train": {"epochs": 2}, **keys})


def optim(**keys):
    return finetune(optim={"lr": 0.1, "weight_decay": 0.0, **keys}).optim


def trainer(built, **kwargs):
    return tiny_trainer(batches(), classes=CLASSES, img_size=32, model=built.model,
                        plan=built.plan, **kwargs)


def bn_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_linear_probe_keeps_the_backbone_frozen_in_eval_mode():
    """A probe's backbone BatchNorm statistics do not move, though the epoch calls
    model.train(); only the classifier changes."""
    torch.manual_seed(0)
    built = build_classifier(finetune(mode="linear"), num_outputs=CLASSES)
    model = built.model
    stats, weights = bn_stats(model), {k: v.clone() for k, v in model.state_dict().items()}
    trainer(built).train_epoch(0)
    assert stats and all(torch.equal(v, bn_stats(model)[k]) for k, v in stats.items())
    after = model.state_dict()
    moved = {k for k, v in weights.items() if not torch.equal(v, after[k])}
    assert moved == {"fc.weight", "fc.bias"}
    assert not model.layer1.training and model.fc.training is True


def test_partial_trains_the_last_blocks_and_the_head():
    built = build_classifier(finetune(mode="partial", partial_blocks=2), num_outputs=CLASSES)
    model = built.model
    trains = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trains == {"layer3", "layer4", "fc"}
    stats = bn_stats(model)
    trainer(built, optimizer=build_optimizer(model, optim(), built.plan)).train_epoch(0)
    after = bn_stats(model)
    assert all(torch.equal(stats[k], after[k]) for k in stats if k.startswith("layer1"))
    assert not all(torch.equal(stats[k], after[k]) for k in stats if k.startswith("layer4"))
    with pytest.raises(HypernymError, match="1..4"):
        build_classifier(finetune(mode="partial", partial_blocks=5), num_outputs=CLASSES)


def test_layer_decay_scales_the_first_step():
    """timm applies each group's lr_scale only when its scheduler steps: the builder applies
    it before the first optimizer step (for every schedule, plateau and none included)."""
    built = build_classifier(finetune(), num_outputs=CLASSES)
    for sched in ("cosine", "plateau", "none"):
        spec = optim(layer_decay=0.5, sched=sched)
        optimizer = build_optimizer(built.model, spec, built.plan)
        build_scheduler(optimizer, spec, epochs=3, steps=4)
        lrs = sorted({round(g["lr"], 8) for g in optimizer.param_groups})
        assert lrs == [round(0.1 * 0.5 ** k, 8) for k in range(5, -1, -1)], (sched, lrs)


def test_head_warmup_holds_the_backbone_then_releases_it():
    torch.manual_seed(0)
    built = build_classifier(finetune(head_warmup_epochs=1), num_outputs=CLASSES)
    model, plan = built.model, built.plan
    spec = optim(opt="adamw")
    optimizer = build_optimizer(model, spec, plan)
    assert plan.held_groups and all("hypernym" not in k for g in optimizer.param_groups
                                    for k in g)  # the plan holds the state, not the groups
    scheduler = build_scheduler(optimizer, spec, epochs=2, steps=3)
    core = trainer(built, optimizer=optimizer, scheduler=scheduler)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    plan.enter_epoch(0, optimizer, scheduler, global_step=0, base_lr=spec.lr)
    assert not train_mode(model, plan).layer2.training and model.fc.training
    core.train_epoch(0)
    mid = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(start[k], mid[k]) for k in start if not k.startswith("fc."))
    assert not torch.equal(start["fc.weight"], mid["fc.weight"])
    core.train_epoch(1)  # enters epoch 1: the warm-up is over
    assert train_mode(model, plan).layer2.training
    assert all(g["lr"] > 0 for g in optimizer.param_groups)
    end = model.state_dict()
    assert not torch.equal(mid["conv1.0.weight"], end["conv1.0.weight"])
    assert not torch.equal(mid["layer1.0.bn1.running_mean"], end["layer1.0.bn1.running_mean"])


def test_head_init_copies_the_rows_of_shared_synsets():
    from hypernym.train.finetune import init_head

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=4)
    old = model.get_classifier().weight.detach().clone()
    pretrained = ["n01440764", "n01443537", "n01484850", "n01491361"]
    copied = init_head(model, ["n01491361", "n09999999", "n01440764"], pretrained)
    head = model.get_classifier()
    assert copied == 2 and head.weight.shape == (3, old.shape[1])
    assert torch.equal(head.weight[0], old[3]) and torch.equal(head.weight[2], old[0])
    assert not torch.equal(head.weight[1], old[1])
    fresh = timm.create_model("resnet10t", num_classes=4)
    assert init_head(fresh, ["cat", "dog"], ["cat", "dog", "x", "y"]) == 0  # not synsets
