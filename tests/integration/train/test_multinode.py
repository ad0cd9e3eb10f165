"""Several Ray nodes (ray.cluster_utils.Cluster: a head with no CPUs, where the driver lives, and
one-CPU worker nodes): prepare survives losing a node mid-run.

Training across nodes that share nothing, with a node lost mid-epoch, is the rig scenario's
(tests/integration/cluster/test_rig.py)."""

from __future__ import annotations

import time

import pytest

from hypernym.config import parse_recipe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

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
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()
    env.undo()


def test_prepare_survives_a_lost_node(cluster, tmp_path):
    """A worker node lost while its shard tasks run: Ray retries them elsewhere, and the dataset
    is the same, byte for byte, as one prepared without the loss."""
    import threading

    from hypernym.data.demo import make_winter21
    from hypernym.data.prepare import prepare

    cl, nodes = cluster
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
