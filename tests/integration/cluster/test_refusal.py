"""A Ray cluster of several nodes (ray.cluster_utils.Cluster: a CPU-less head on 127.0.0.1 and a
worker node on 127.0.0.2, reached through RAY_ADDRESS as a user would) refuses embedded,
one-host settings before any work starts, naming each setting to change; a declared shared
mount lifts the refusal for the paths under it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hypernym.cli import app
from hypernym.errors import HypernymError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.2")
    cluster.wait_for_nodes()
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()


def test_pretrain_and_prepare_refuse_one_host_paths(two_nodes, tmp_path, monkeypatch):
    import ray
    from ray._private.state import actors

    for var in ("MLFLOW_TRACKING_URI", "HYPERNYM_ARTIFACT_ROOT", "HYPERNYM_STORAGE",
                "HYPERNYM_SHARED_FS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", two_nodes)
    home = tmp_path / "home"
    monkeypatch.setenv("HYPERNYM_HOME", str(home))
    recipe = tmp_path / "pretrain.yaml"
    recipe.write_text(f"kind: pretrain\nname: refused\ndata:\n  path: {tmp_path / 'ds'}\n"
                      "model:\n  arch: resnet10t\nscaling:\n  num_workers: 1\n")

    result = CliRunner().invoke(app, ["pretrain", str(recipe)])
    assert isinstance(result.exception, HypernymError), result.output
    message = str(result.exception)
    assert message.startswith("this Ray cluster has 2 nodes"), message
    for expected in (f"checkpoint storage at {home / 'runs'}: set HYPERNYM_STORAGE=s3://",
                     f"MLflow tracking at sqlite:///{home / 'mlflow.db'}: set "
                     "MLFLOW_TRACKING_URI=http://",
                     "MLflow artifacts at file://", "HYPERNYM_ARTIFACT_ROOT=s3://",
                     f"the dataset at {tmp_path / 'ds'}: set data.path=s3://",
                     "HYPERNYM_SHARED_FS=/mnt/shared"):
        assert expected in message, message
    # Refused before anything started: no MLflow database, no run folder, no Ray actor.
    assert ray.is_initialized() and not (home / "mlflow.db").exists()
    assert not (home / "runs").exists()
    assert not [a for a in actors().values() if a["State"] == "ALIVE"]

    # Preparation writes shards from tasks on any node: a local output is refused too.
    result = CliRunner().invoke(app, ["prepare", "--source", str(tmp_path / "raw"),
                                      "--output", str(tmp_path / "out")])
    assert isinstance(result.exception, HypernymError), result.output
    assert "the dataset output at" in str(result.exception)
    assert "set output=s3://" in str(result.exception)
    assert "source=s3://" in str(result.exception)

    # Declaring the folder a mount every node has lifts the refusal for paths under it only.
    from hypernym.preflight import check_cluster, training_locations
    from hypernym.settings import get_settings

    monkeypatch.setenv("HYPERNYM_SHARED_FS", str(tmp_path))
    check_cluster(get_settings(), training_locations(get_settings(), data_path=str(tmp_path)))
    with pytest.raises(HypernymError, match=r"(?s)2 nodes.*the dataset at /elsewhere/ds") as err:
        check_cluster(get_settings(), training_locations(get_settings(),
                                                         data_path="/elsewhere/ds"))
    assert "HYPERNYM_STORAGE=" not in str(err.value)
