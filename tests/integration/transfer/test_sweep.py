"""A 3-trial sweep on 2 CPUs with Ray Tune and ASHA (1 Ray Train worker per trial, real MLflow
and real shards): early-stopped trials end (their child runs are closed, Tune saw fewer epochs),
no placement group stays reserved, and the best trial is the registered model, with the sweep in
its lineage."""

from __future__ import annotations

import pytest

from tests.servers import local_ray

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1200)  # about 150 s on a quiet machine; a loaded one starts workers slowly
def test_sweep_with_asha(tmp_path, monkeypatch):
    import ray
    from mlflow.tracking import MlflowClient

    from hypernym.config import parse_recipe
    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare
    from hypernym.registry.models import load_card, resolve
    from hypernym.settings import get_settings
    from hypernym.transfer.sweep import run_sweep

    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    # a Ray of its own, all 2 CPUs for the trials (not the package's shared one)
    with local_ray(fresh=True):
        # Four toy classes, 8 training images each: 4 steps an epoch.
        make_winter21(tmp_path / "raw", images_per_class=12, image_size=(40, 32), seed=5,
                      classes=["n02085620", "n02123045", "n01530575", "n02814533"])
        prepare(parse_recipe({
            "kind": "prepare", "source": str(tmp_path / "raw"), "output": str(tmp_path / "data"),
            "val_per_class": 4, "min_per_class": 0, "image_size": 16, "resize": "shorter",
            "shard_samples": 64,
        }), show_progress=False)
        recipe = {
            "kind": "finetune", "name": "sweep-test", "experiment": "sweeps", "backbone": None,
            "data": {"path": str(tmp_path / "data"), "img_size": 16, "batch_size": 8,
                     "crop_scale": [0.8, 1.0]},
            "model": {"arch": "resnet10t"},
            "optim": {"lr": 3e-3, "sched": "none"},
            "train": {"epochs": 3, "log_every": 100, "system_metrics_s": None},
            "scaling": {"num_workers": 1},
            "registry": {"name": "toy-swept", "alias": "best"},
        }
        # Two usable learning rates start first; the hopeless one waits for a free CPU, so it
        # reaches ASHA's rung after better trials did and is stopped there (by validation loss:
        # accuracies of 16 images tie often).
        result = run_sweep(recipe, {"optim.lr": {"grid": [3e-3, 1e-3, 1e-7]}}, trials=1,
                           max_concurrent=2, metric="val/loss", mode="min", grace_period=1)
        settings = get_settings()
        client = MlflowClient(settings.tracking_uri)
        pgs = ray.util.placement_group_table()
        left = [g for g in pgs.values() if g["state"] in ("CREATED", "PENDING")]

    assert len(result.trials) == 3 and all(t.error is None for t in result.trials)
    stopped = [t for t in result.trials if t.stopped_early]
    assert stopped, [(t.values, t.epochs, t.metric) for t in result.trials]
    assert not left, left
    for trial in result.trials:
        run = client.get_run(trial.run_id)
        assert run.data.tags["mlflow.parentRunId"] == result.run_id
        assert run.info.status == ("KILLED" if trial.stopped_early else "FINISHED"), trial
        if trial.stopped_early:
            assert trial.epochs < 3 and run.data.tags["hypernym.sweep.stopped"] == "asha"
        else:
            assert trial.epochs == 3
    assert client.get_run(result.run_id).info.status == "FINISHED"

    best = result.best
    finished = [t.metric for t in result.trials if not t.stopped_early]
    assert best.metric == min(finished)
    version = resolve("toy-swept@best", settings=settings)
    assert version.run_id == best.run_id
    assert version.tags["sweep_run_id"] == result.run_id
    card = load_card("toy-swept@best", settings=settings)
    assert card.selected["sweep"]["run_id"] == result.run_id
    assert card.selected["sweep"]["trial_id"] == best.trial_id
    print(f"placement groups the sweep removed: {result.placement_groups_removed}")
