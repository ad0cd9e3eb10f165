"""The shipped Kubernetes manifests pass every check, and broken copies of them fail.

What checks what is in kube.py (and docs/deploy.md): Kubernetes' core schemas for core kinds
and for the pod templates inside KubeRay resources, this project's ray.io/v1 schema, then the
rules of KubeRay's operator and of this project.
"""

from __future__ import annotations

import copy
import re

import pytest

import hypernym

from .conftest import INFRA
from .kube import load_docs, validate_docs

K8S = INFRA / "k8s"


def _docs(name: str) -> list[dict]:
    return load_docs((K8S / name).read_text())


def _kind(docs: list[dict], kind: str) -> dict:
    return next(d for d in docs if d["kind"] == kind)


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


SHIPPED = sorted(p.name for p in K8S.glob("*.yaml"))


def test_the_manifests_are_all_here():
    assert SHIPPED == ["mlflow.yaml", "raycluster.yaml", "rayjob.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifests_pass_every_check(name):
    docs = _docs(name)
    assert validate_docs(docs) == []
    images = re.findall(r"^\s*image: (\S+)$", (K8S / name).read_text(), re.MULTILINE)
    assert images and all(re.search(rf":{hypernym.__version__}-(gpu|cpu)$", i) for i in images)


def test_raycluster_has_a_cpu_head_and_an_autoscaled_gpu_group_with_shared_memory():
    cluster = _kind(_docs("raycluster.yaml"), "RayCluster")["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    gpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert 0 <= gpu["minReplicas"] < gpu["maxReplicas"]
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    cpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "cpu")
    assert cpu["template"]["spec"]["containers"][0]["image"].endswith("-cpu")


def test_rayjob_runs_the_recipe_from_its_configmap_and_cleans_up():
    docs = _docs("rayjob.yaml")
    job = _kind(docs, "RayJob")["spec"]
    assert job["entrypoint"] == "hypernym run /etc/hypernym/recipe.yaml"
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    config_map = _kind(docs, "ConfigMap")
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "recipe", "configMap": {"name": config_map["metadata"]["name"]}} in \
        head["volumes"]
    recipe = load_docs(config_map["data"]["recipe.yaml"])[0]  # test_render parses it fully
    assert recipe["kind"] == "pretrain" and recipe["data"]["path"].startswith("s3://")
    assert recipe["scaling"]["use_gpu"] and recipe["scaling"]["num_workers"] == 8


def test_credentials_come_from_secrets_with_the_settings_hypernym_reads():
    job = _kind(_docs("rayjob.yaml"), "RayJob")["spec"]["rayClusterSpec"]
    for group in [job["headGroupSpec"], *job["workerGroupSpecs"]]:
        container = group["template"]["spec"]["containers"][0]
        env = _env(container)
        assert env["HYPERNYM_STORAGE"]["value"].startswith("s3://")
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]
        assert container["envFrom"] == [{"secretRef": {"name": "hypernym-s3"}}]
    mlflow = _kind(_docs("mlflow.yaml"), "Deployment")["spec"]["template"]["spec"]
    server = mlflow["containers"][0]
    assert "--app-name basic-auth" in server["args"][0]
    env = _env(server)
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_ADMIN_PASSWORD",
                "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"]
    service = _kind(_docs("mlflow.yaml"), "Service")
    assert service["metadata"]["name"] == "mlflow" and service["spec"]["ports"][0]["port"] == 5000


def _job_cluster(docs):
    return _kind(docs, "RayJob")["spec"]["rayClusterSpec"]


def _gpu_container(docs):
    return _job_cluster(docs)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]


def _ttl_without_shutdown(docs):
    _kind(docs, "RayJob")["spec"]["shutdownAfterJobFinishes"] = False


def _gpu_without_limit(docs):
    del _gpu_container(docs)["resources"]["limits"]["nvidia.com/gpu"]


def _inline_secret(docs):
    _gpu_container(docs)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrX"})


def _unknown_kuberay_field(docs):
    _job_cluster(docs)["headGroupSpec"]["replicas"] = 1


def _unknown_pod_field(docs):
    container = _gpu_container(docs)
    container["resource"] = container.pop("resources")


def _no_head(docs):
    del _job_cluster(docs)["headGroupSpec"]


def _min_over_max(docs):
    _job_cluster(docs)["workerGroupSpecs"][0]["minReplicas"] = 9


def _repeated_group(docs):
    groups = _job_cluster(docs)["workerGroupSpecs"]
    groups.append(copy.deepcopy(groups[0]))


def _no_shm(docs):
    container = _gpu_container(docs)
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "dshm"]


def _long_name(docs):
    _kind(docs, "RayJob")["metadata"]["name"] = "in21k-p-resnet50-" + "x" * 40


def _secret_object(docs):
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hypernym-s3"},
                 "stringData": {"AWS_SECRET_ACCESS_KEY": "wJalrX"}})


def _missing_configmap(docs):
    docs[:] = [d for d in docs if d["kind"] != "ConfigMap"]


def _wrong_type(docs):
    _kind(docs, "RayJob")["spec"]["ttlSecondsAfterFinished"] = "an hour"


BROKEN = {
    "ttl without shutdown": (_ttl_without_shutdown, "shutdownAfterJobFinishes set to false "
                             "cannot have TTLSecondsAfterFinished"),
    "GPU worker without a GPU limit": (_gpu_without_limit, "without an nvidia.com/gpu limit"),
    "inline secret value": (_inline_secret, "AWS_SECRET_ACCESS_KEY has an inline value"),
    "unknown KubeRay field": (_unknown_kuberay_field, "'replicas' was unexpected"),
    "unknown pod field": (_unknown_pod_field, "'resource' was unexpected"),
    "no head group": (_no_head, "headGroupSpec"),
    "minReplicas over maxReplicas": (_min_over_max, "minReplicas 9 greater than maxReplicas"),
    "worker group name repeated": (_repeated_group, "used more than once"),
    "no /dev/shm": (_no_shm, "/dev/shm"),
    "name too long": (_long_name, "no more than 47 characters"),
    "Secret with values": (_secret_object, "does not belong in the repository"),
    "ConfigMap not shipped": (_missing_configmap, "is not in these manifests"),
    "wrong type": (_wrong_type, "'an hour' is not of type 'integer'"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_copy_of_the_rayjob_is_rejected(case):
    docs = _docs("rayjob.yaml")
    assert validate_docs(docs) == []  # the copy is broken by the edit below, nothing else
    breaks, expected = BROKEN[case]
    breaks(docs)
    problems = validate_docs(docs)
    assert any(expected in p for p in problems), problems


def test_a_tracking_server_with_its_password_inline_is_rejected():
    docs = _docs("mlflow.yaml")
    server = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    uri = next(e for e in server["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    uri.pop("valueFrom")
    uri["value"] = "postgresql://mlflow:hunter2@db:5432/mlflow"
    problems = validate_docs(docs)
    assert any("URI with a password" in p for p in problems), problems
