"""A task defined here, in the test file alone, trains through the core with no change to it:
multi-hot targets (the binary digits of each sample's class index) learned with BCE, on shards
prepared from generated images. Once in this process (`Trainer`), once on Ray Train with two
workers (`run_training`), where the task is pickled to the workers as it is; that run also
shards the model with FSDP2 (gloo), takes mid-epoch checkpoints gathered from the shards, and
registers a model equal to its last checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hypernym.config import parse_recipe
from hypernym.train import Task, Trainer, run_training
from hypernym.train.distributed import all_reduce_sum

pytestmark = pytest.mark.integration

BITS = 3  # 8 classes


class BitsCodec:
    """jpg through the reader's transform; the target: the class index's bits, as floats."""

    members = ("jpg", "cls")
    packs_ints = False

    def __call__(self, raw, transform):
        index = int(raw.fields["cls"])
        return transform(raw.fields["jpg"]), torch.tensor(
            [(index >> bit) & 1 for bit in range(BITS)], dtype=torch.float32)

    def collate(self, targets: list) -> torch.Tensor:
        return torch.stack(targets)


class BitsMeter:
    """BCE and the fraction of bits right, summed over ranks."""

    def __init__(self, device) -> None:
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)

    def update(self, logits, target) -> None:
        logits = logits.float()
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        right = ((logits > 0).float() == target).sum()
        self.totals += torch.stack([loss, right, torch.tensor(target.numel())]).to(
            self.totals)

    def compute(self) -> dict[str, float]:
        loss, right, bits = all_reduce_sum(self.totals.clone()).tolist()
        return {"loss": loss / max(bits, 1), "bit_accuracy": right / max(bits, 1)}


class BitsTask(Task):
    name = "bits"
    num_outputs = BITS

    def codec(self):
        return BitsCodec()

    def loss(self, model, images, target):
        return F.binary_cross_entropy_with_logits(model(images).float(), target)

    def meter(self, device):
        return BitsMeter(device)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, ray_local):
    from hypernym.data.demo import DEMO_SYNSETS, make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("bits")
    make_winter21(root / "raw", images_per_class=24, image_size=(40, 40), seed=2,
                  classes=DEMO_SYNSETS[:2 ** BITS])
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw"), "output": str(root / "ds"),
        "val_per_class": 6, "min_per_class": 0, "image_size": 32, "shard_samples": 40,
    }), show_progress=False)
    return root / "ds"


def recipe(path, **scaling):
    return parse_recipe({
        "kind": "pretrain", "name": "bits", "experiment": "custom-task",
        "data": {"path": str(path), "img_size": 32, "batch_size": 16, "crop_scale": [0.6, 1]},
        "model": {"arch": "resnet10t"}, "optim": {"lr": 3e-3, "warmup_epochs": 0},
        "train": {"epochs": 4, "log_every": 1, "system_metrics_s": None},
        "scaling": {"num_workers": 1, **scaling},
    })


def test_in_process(shards):
    trainer = Trainer.from_recipe(recipe(shards), task=BitsTask())
    before = trainer.validate()
    metrics = trainer.fit()
    assert trainer.state.global_step == 4 * (8 * 18 // 16)
    assert metrics["val/loss"] < before["val/loss"]
    assert metrics["val/bit_accuracy"] > 0.6, metrics  # chance: 0.5


def test_on_ray_train_with_two_workers_and_fsdp(shards):
    import ray.cloudpickle
    from mlflow.tracking import MlflowClient

    from hypernym.registry.models import load_backbone
    from hypernym.settings import get_settings
    from hypernym.train.checkpoint import load_state

    # Ray pickles classes of importable modules by reference; this file is not on the
    # workers' path, so its classes travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    raw = recipe(shards, num_workers=2, strategy="fsdp").model_dump(mode="json")
    raw["train"]["checkpoint_every"] = 3
    raw["registry"] = {"name": "bits", "alias": "candidate"}
    result = run_training(parse_recipe(raw), task=BitsTask(), show_progress=False)
    client = MlflowClient(get_settings().tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["hypernym.task"] == "bits"
    steps = 4 * (8 * 18 // 32)
    assert run.data.metrics["progress/step"] == steps
    assert result.metrics["val/bit_accuracy"] > 0.55, result.metrics
    # mid-epoch checkpoints every 3 steps were reported too; the last 2 are kept
    kept = sorted(p.name for p in Path(result.checkpoint_path).parent.iterdir()
                  if p.name.startswith(("step-", "epoch-")))
    assert kept == ["epoch-0004", "step-00000015"], kept
    state = load_state(result.checkpoint_path)
    assert state["optimizer"]["state"], "the optimizer state was gathered from the shards"
    model = load_backbone("bits@candidate")  # the task's model: a classifier of BITS outputs
    assert state["model"].keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
