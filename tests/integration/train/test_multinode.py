"""Several Ray nodes (ray.cluster_utils.Cluster: a head with no CPUs, where the driver and Ray
Train's controller live, and one-CPU worker nodes, so every training worker has a node of its
own): prepare and pretrain across nodes, per-node system metrics in the one MLflow run, and a
worker node lost mid-epoch, replaced, and the run restarted from its last checkpoint with every
sample trained exactly once."""

from __future__ import annotations

import time

import pytest

from hypernym.config import parse_recipe
from tests.integration.train.trace import (
    BATCH,
    attempts,
    check_exactly_once,
    fit_in_thread,
    surviving_history,
    wait_for_step,
)

pytestmark = pytest.mark.integration

EVERY = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    if ray.is_initialized():
        ray.shutdown()
    # These "nodes" share this machine's disk: declare the test's temporary folder a shared
    # mount, or hypernym refuses local paths on a cluster of several nodes.
    env = pytest.MonkeyPatch()
    env.setenv("HYPERNYM_SHARED_FS", str(tmp_path_factory.getbasetemp()))
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    # Ray Train tells nodes apart by IP (local and node ranks): each node gets its own loopback
    # address, as machines of a real cluster have their own.
    nodes = [cluster.add_node(num_cpus=1, node_ip_address=f"127.0.0.{i}") for i in (2, 3)]
    # Quiet: without a dashboard, Ray Train's placement-group cleaner warns every second.
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    root = tmp_path_factory.mktemp("multinode")
    make_winter21(root / "raw", images_per_class=24, image_size=(64, 56), seed=3)
    # The shard tasks run on the worker nodes: the head has no CPU.
    manifest = prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw"), "output": str(root / "ds"),
        "val_per_class": 2, "min_per_class": 0, "image_size": 36, "shard_samples": 37,
    }), show_progress=False)
    yield cluster, nodes, root, manifest
    ray.shutdown()
    cluster.shutdown()
    env.undo()


def recipe(root):
    return parse_recipe({
        "kind": "pretrain", "name": "multinode", "experiment": "tests",
        "data": {"path": str(root / "ds"), "img_size": 32, "batch_size": BATCH,
                 "loader_workers": 1},
        "model": {"arch": "resnet10t"}, "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "train": {"epochs": 2, "log_every": 5, "checkpoint_every": EVERY,
                  "system_metrics_s": 1},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1},
    })


def test_node_lost_mid_epoch_is_replaced_and_the_run_goes_on(cluster, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from hypernym.settings import get_settings

    cl, nodes, root, manifest = cluster
    monkeypatch.setenv("HYPERNYM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(tmp_path / "trace"))
    thread, out = fit_in_thread(recipe(root))
    wait_for_step(tmp_path / "trace", EVERY * 2 + 2)  # 2 steps past a checkpoint
    # Each worker node holds one training worker (one CPU each), so losing either loses a rank.
    cl.remove_node(nodes[1], allow_graceful=False)
    time.sleep(1)
    nodes[1] = cl.add_node(num_cpus=1, node_ip_address="127.0.0.4")  # as an autoscaler would
    thread.join(timeout=600)
    assert not thread.is_alive(), "training did not finish after the node was replaced"
    assert "error" not in out, out.get("error")

    assert len(attempts(tmp_path / "trace")) == 2, "one restart, from a mid-epoch checkpoint"
    check_exactly_once(surviving_history(tmp_path / "trace"), manifest.num_samples("train"), [2])

    client = MlflowClient(get_settings().tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED", "one MLflow run across the node loss"
    system = {key for key in run.data.metrics if key.startswith("system/")}
    for node in ("node_0", "node_1"):  # each node's first rank samples its node
        assert f"system/{node}/cpu_utilization_percentage" in system, sorted(system)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "progress/step")]
    # The steps between the checkpoint and the loss ran twice, and MLflow shows both.
    assert steps[-1] == max(steps) == out["result"].metrics["progress/step"]


def test_prepare_survives_a_lost_node(cluster, tmp_path):
    """A worker node lost while its shard tasks run: Ray retries them elsewhere, and the dataset
    is the same, byte for byte, as one prepared without the loss."""
    import threading

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    cl, nodes, _, _ = cluster
    make_winter21(tmp_path / "raw", images_per_class=40, seed=4)  # 640 images of 400x350

    def rec(output):
        return parse_recipe({
            "kind": "prepare", "source": str(tmp_path / "raw"), "output": str(output),
            "val_per_class": 4, "min_per_class": 0, "image_size": 64, "shard_samples": 16,
        })

    out = {}
    thread = threading.Thread(target=lambda: out.update(m=prepare(rec(tmp_path / "a"),
                                                                  show_progress=False)))
    thread.start()
    parts = tmp_path / "a" / "_parts"
    deadline = time.monotonic() + 120
    while not list(parts.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    done_at_loss = len(list(parts.glob("*.json")))
    cl.remove_node(nodes[0], allow_graceful=False)
    nodes[0] = cl.add_node(num_cpus=1, node_ip_address="127.0.0.5")
    thread.join(timeout=300)
    lost = out["m"]
    shards = [s for split in ("train", "val") for s in lost.splits[split]]
    assert 0 < done_at_loss < len(shards), "the node was lost mid-prepare"
    assert not list((tmp_path / "a").glob(".*.tmp")) and not parts.exists()
    assert lost.num_samples("train") + lost.num_samples("val") == 640

    clean = prepare(rec(tmp_path / "b"), show_progress=False)
    assert lost.fingerprint == clean.fingerprint
    assert shards == [s for split in ("train", "val") for s in clean.splits[split]]
