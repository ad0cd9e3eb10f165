"""Checkpoint manifests: written last by save_state, and every kind of damage found by name."""

from __future__ import annotations

import json

import pytest
import torch

from hypernym.train.checkpoint import STATE_FILE, load_state, save_state
from hypernym.train.verify import (
    MANIFEST_FILE,
    CheckpointDamaged,
    check_checkpoint,
    read_manifest,
    recorded_names,
    verify_checkpoint,
)


@pytest.fixture
def checkpoint(tmp_path):
    state = {"model": {"w": torch.arange(1000, dtype=torch.float32)},
             "position": {"epoch": 2, "global_step": 48}}
    return save_state(tmp_path / "step-00000048", state, {"name": "t"})


def test_save_state_writes_a_manifest_of_every_file_last(checkpoint):
    manifest = read_manifest(checkpoint)
    assert (manifest.step, manifest.epoch) == (48, 2)
    assert sorted(manifest.files) == ["recipe.json", STATE_FILE]
    assert manifest.files[STATE_FILE]["size"] == (checkpoint / STATE_FILE).stat().st_size
    # written last: no file of the checkpoint is newer than its manifest
    newest = max(p.stat().st_mtime_ns for p in checkpoint.iterdir())
    assert (checkpoint / MANIFEST_FILE).stat().st_mtime_ns == newest
    assert check_checkpoint(checkpoint) is None
    assert load_state(checkpoint)["position"]["global_step"] == 48


def test_a_truncated_file_is_named_with_both_sizes(checkpoint):
    data = (checkpoint / STATE_FILE).read_bytes()
    (checkpoint / STATE_FILE).write_bytes(data[: len(data) // 2])
    assert check_checkpoint(checkpoint) == (
        f"{STATE_FILE} is {len(data) // 2} bytes, its manifest says {len(data)}")
    with pytest.raises(CheckpointDamaged, match=r"checkpoint s3://runs/x/step-00000048 is not "
                       r"whole: state.pt is \d+ bytes"):
        load_state(checkpoint, name="s3://runs/x/step-00000048")


def test_a_missing_file_and_a_missing_manifest_are_named(checkpoint):
    (checkpoint / "recipe.json").unlink()
    assert check_checkpoint(checkpoint) == "recipe.json is missing"
    (checkpoint / MANIFEST_FILE).unlink()
    assert check_checkpoint(checkpoint).startswith(f"it has no {MANIFEST_FILE}")
    with pytest.raises(CheckpointDamaged, match="no checkpoint_manifest.json"):
        verify_checkpoint(checkpoint)


def test_same_size_other_bytes_fail_on_the_hash(checkpoint):
    path = checkpoint / STATE_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data: the size stays, the content does not
    path.write_bytes(bytes(data))
    problem = check_checkpoint(checkpoint)
    assert problem.startswith(f"{STATE_FILE} has sha256 ") and "its manifest says" in problem


def test_an_unreadable_manifest_is_damage_not_a_crash(checkpoint):
    (checkpoint / MANIFEST_FILE).write_text("{not json")
    assert check_checkpoint(checkpoint) == f"its {MANIFEST_FILE} cannot be read (9 bytes)"
    assert read_manifest(checkpoint) is None


def test_recorded_names_follow_the_report_order():
    snapshot = {"checkpoint_results": [{"checkpoint_dir_name": "epoch-0001", "metrics": {}},
                                       {"checkpoint_dir_name": "step-00000008", "metrics": {}},
                                       {"checkpoint_dir_name": "step-00000024", "metrics": {}}],
                "checkpoint_report_indices": [5, 2, 9]}
    assert recorded_names(json.dumps(snapshot)) == ["step-00000008", "epoch-0001",
                                                    "step-00000024"]
    with pytest.raises(ValueError, match="not a checkpoint manager snapshot"):
        recorded_names("{}")


def test_registration_refuses_a_checkpoint_that_is_not_whole(checkpoint, tmp_path):
    """register_checkpoint verifies before it opens the dataset, builds or logs anything: the
    dataset path holds none, and with a tracking URI nobody serves any MLflow call would fail."""
    from hypernym.config import parse_recipe
    from hypernym.settings import Settings
    from hypernym.train.registration import register_checkpoint

    (checkpoint / "recipe.json").unlink()
    recipe = parse_recipe({"kind": "pretrain", "name": "t", "data": {"path": str(tmp_path)},
                           "model": {"arch": "test_resnet"}, "registry": {"name": "t"}})
    settings = Settings(home=tmp_path, tracking_uri="http://127.0.0.1:9", artifact_root=None,
                        ray_address=None)
    with pytest.raises(CheckpointDamaged, match="checkpoint s3://r/step-00000048 is not whole: "
                       "recipe.json is missing"):
        register_checkpoint(recipe, checkpoint, "run", metrics={}, settings=settings,
                            checkpoint_name="s3://r/step-00000048")
