"""`hypernym deploy render`: manifests for a recipe, checked like the shipped ones.

The committed infra/k8s/rayjob.yaml and raycluster.yaml are this command's output (their first
line says with which flags): rendering again must give the same manifests.
"""

from __future__ import annotations

import copy
import shlex

import pytest
from typer.testing import CliRunner

from hypernym.cli import app
from hypernym.config import parse_recipe
from hypernym.errors import HypernymError

from .conftest import INFRA, ROOT
from .kube import load_docs, validate_docs

IMAGE = "registry.example.com/hypernym:0.1.0-gpu"


def _render(*args: str, expect_error: bool = False):
    result = CliRunner().invoke(app, ["deploy", "render", *args])
    if expect_error:
        assert isinstance(result.exception, HypernymError), result.output
        return str(result.exception)
    assert result.exit_code == 0, (result.output, result.exception)
    return load_docs(result.stdout)


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_committed_manifests_are_what_render_gives(name, monkeypatch):
    text = (INFRA / "k8s" / name).read_text()
    first = text.splitlines()[0]
    assert first.startswith("# Rendered by: hypernym deploy render "), first
    monkeypatch.chdir(ROOT)
    args = shlex.split(first.removeprefix("# Rendered by: hypernym deploy render "))
    assert _render(*args) == load_docs(text), f"render again: {first[2:]}"


def test_render_a_pretraining_recipe_on_32_gpus():
    docs = _render(str(ROOT / "pipelines/pretrain/demo.yaml"), "--image", IMAGE, "--gpus", "8",
                   "--workers", "4", "--storage", "s3://runs/hypernym",
                   "--set", "data.path=s3://data/mini21k")
    assert validate_docs(docs) == []
    config_map, job = docs
    recipe = parse_recipe(load_docs(config_map["data"]["recipe.yaml"])[0])
    assert (recipe.name, recipe.data.path) == ("demo-pretrain", "s3://data/mini21k")
    assert (recipe.scaling.num_workers, recipe.scaling.use_gpu) == (32, True)
    assert recipe.scaling.cpus_per_worker == 9  # of 80 CPUs per pod: 8 stay unreserved
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (limits["nvidia.com/gpu"], limits["cpu"], limits["memory"]) == (8, "80", "512Gi")
    assert job["metadata"]["name"] == "demo-pretrain"


def test_render_a_prepare_recipe_on_cpu_pods():
    docs = _render(str(ROOT / "pipelines/prepare/winter21.yaml"), "--image", IMAGE,
                   "--gpus", "0", "--workers", "8", "--kind", "raycluster",
                   "--set", "source=s3://raw/winter21", "--set", "output=s3://data/in21k-p")
    assert validate_docs(docs) == []
    group = docs[1]["spec"]["workerGroupSpecs"][0]
    assert group["groupName"] == "cpu" and group["maxReplicas"] == 8
    assert "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0]["resources"][
        "limits"]
    assert docs[1]["metadata"]["name"] == "in21k-p"  # from the output, the recipe has no name


@pytest.mark.parametrize("args, message", [
    (["--storage", "s3://runs/x"], "--set data.path=s3://bucket/prefix"),
    (["--set", "data.path=s3://d/x"], "--storage is required"),
    (["--set", "data.path=s3://d/x", "--storage", "/mnt/runs"], "is a local path"),
    (["--set", "data.path=s3://d/x", "--storage", "s3://r", "--set", "optim.lrr=1"],
     "optim.lrr: unknown key (did you mean 'lr'?)"),
    (["--set", "data.path=s3://d/x", "--storage", "s3://r", "--cpu-workers", "2"],
     "--cpu-workers needs --kind raycluster"),
])
def test_render_refuses_what_cannot_run_on_a_cluster(args, message):
    text = _render(str(ROOT / "pipelines/pretrain/demo.yaml"), "--image", IMAGE, *args,
                   expect_error=True)
    assert message in text


def test_render_refuses_gpus_for_prepare_and_an_untagged_image():
    prepare = str(ROOT / "pipelines/prepare/winter21.yaml")
    text = _render(prepare, "--image", IMAGE, "--set", "source=s3://a", "--set", "output=s3://b",
                   expect_error=True)
    assert "a prepare recipe runs on CPUs: pass --gpus 0" in text
    text = _render(prepare, "--image", IMAGE, "--gpus", "0", "--kind", "raycluster",
                   "--cpu-workers", "2", "--set", "source=s3://a", "--set", "output=s3://b",
                   expect_error=True)
    assert "the workers are CPU pods already" in text
    text = _render(prepare, "--image", "hypernym", "--gpus", "0", expect_error=True)
    assert "--image: 'hypernym' is not an image reference with a tag" in text


def _gcs_ft_cluster(*extra: str) -> list[dict]:
    return _render(str(ROOT / "pipelines/pretrain/demo.yaml"), "--image", IMAGE,
                   "--kind", "raycluster", "--storage", "s3://runs/hypernym",
                   "--set", "data.path=s3://data/mini21k",
                   "--redis-address", "redis.ray.svc.cluster.local:6379", *extra)


def test_gcs_fault_tolerance_with_an_external_redis_and_its_password_from_a_secret():
    docs = _gcs_ft_cluster()
    assert validate_docs(docs) == []
    options = docs[1]["spec"]["gcsFaultToleranceOptions"]
    assert options == {"redisAddress": "redis.ray.svc.cluster.local:6379",
                       "redisPassword": {"valueFrom": {"secretKeyRef": {
                           "name": "hypernym-redis", "key": "password"}}}}
    head = docs[1]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"} & {e["name"] for e in head["env"]}
    docs = _gcs_ft_cluster("--redis-secret", "")  # a Redis without a password
    assert validate_docs(docs) == []
    assert "redisPassword" not in docs[1]["spec"]["gcsFaultToleranceOptions"]


@pytest.mark.parametrize("args, message", [
    (["--kind", "rayjob"], "--redis-address (GCS fault tolerance) needs --kind raycluster"),
    (["--redis-address", "redis"], "--redis-address: 'redis' is not a Redis address: give "
                                   "HOST:PORT"),
])
def test_gcs_fault_tolerance_refuses_a_rayjob_and_a_bad_address(args, message):
    text = _render(str(ROOT / "pipelines/pretrain/demo.yaml"), "--image", IMAGE,
                   "--storage", "s3://runs/hypernym", "--set", "data.path=s3://data/mini21k",
                   "--redis-address", "redis:6379", *args, expect_error=True)
    assert message in text


def _break(docs, change):
    broken = copy.deepcopy(docs)
    change(broken[1]["spec"])
    return validate_docs(broken)


def test_broken_gcs_fault_tolerance_copies_are_rejected():
    docs = _gcs_ft_cluster()
    head = ("headGroupSpec", "template", "spec", "containers")

    def env(spec, name, value="x"):
        node = spec
        for key in head:
            node = node[key]
        node[0]["env"].append({"name": name, "value": value})

    assert any("cannot set `RAY_REDIS_ADDRESS` env var" in e for e in _break(
        docs, lambda s: env(s, "RAY_REDIS_ADDRESS", "redis:6379")))
    assert any("cannot set `redis-password` in rayStartParams" in e for e in _break(
        docs, lambda s: s["headGroupSpec"]["rayStartParams"].update({"redis-password": "p"})))
    assert any("redisPassword has an inline value" in e for e in _break(
        docs, lambda s: s["gcsFaultToleranceOptions"].update(redisPassword={"value": "p"})))
    assert any("redisAdress" in e for e in _break(  # a misspelt key: the schema rejects it
        docs, lambda s: s["gcsFaultToleranceOptions"].update(redisAdress="r:1")))
    without = _break(docs, lambda s: (s.pop("gcsFaultToleranceOptions"),
                                      env(s, "RAY_REDIS_ADDRESS", "redis:6379")))
    assert any("implicitly enables GCS fault tolerance" in e for e in without)
