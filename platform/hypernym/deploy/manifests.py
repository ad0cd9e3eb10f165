"""KubeRay manifests for one recipe, built as plain dicts and printed as YAML.

Plain dict building rather than a template engine: Jinja2 is installed (torch and MLflow pull it
in) but text templates would let a value break the YAML's structure, while dicts dumped by
PyYAML are always well-formed and quote what needs quoting. The shape follows KubeRay v1.7's
`ray.io/v1` API; tests/unit/deploy/ validates every rendered manifest against Kubernetes' own
schemas, a schema of the KubeRay fields used here, and the rules KubeRay's operator enforces.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from hypernym.deploy.spec import (
    MAX_RAYCLUSTER_NAME,
    MAX_RAYJOB_NAME,
    RAY_VERSION,
    DeploySpec,
    resource_name,
)

__all__ = ["RECIPE_PATH", "build_manifests", "dump_manifests"]

RECIPE_DIR = "/etc/hypernym"
RECIPE_PATH = f"{RECIPE_DIR}/recipe.yaml"
RUN_AS = 1000  # the images' non-root user (infra/Dockerfile)
GIB = 1024**3
# A loader worker's ring holds 7 batches in /dev/shm (docs/reader.md, "Decode and augmentation").
RING_BATCHES = 7


def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hypernym", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component}


def _env(spec: DeploySpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI", "value": spec.tracking_uri}]
    if spec.storage:
        env.append({"name": "HYPERNYM_STORAGE", "value": spec.storage})
    if spec.tracking_secret:  # never a value here: the password stays in the Secret
        env += [{"name": f"MLFLOW_TRACKING_{key.upper()}",
                 "valueFrom": {"secretKeyRef": {"name": spec.tracking_secret, "key": key}}}
                for key in ("username", "password")]
    return env


def _shm_gib(recipe, pods_gpus: int) -> tuple[int, int]:
    """(/dev/shm size, Ray object store size) in GiB for one worker pod."""
    ring = 0
    data = getattr(recipe, "data", None)
    if data is not None:
        loaders = max(data.loader_workers, 1) * max(pods_gpus, 1)
        ring = loaders * RING_BATCHES * data.batch_size * 3 * data.img_size**2
    store = 2 * max(pods_gpus, 1)  # the streaming reader keeps batches out of the object store
    return store + math.ceil(2 * ring / GIB), store  # twice the rings: DataLoader's own copies


def _container(name: str, image: str, spec: DeploySpec, *, cpus: int, memory_gib: int,
               gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        amounts["nvidia.com/gpu"] = gpus
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # Ray sizes itself from the limits; requests equal to them keep the pod Guaranteed.
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "env": _env(spec),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "recipe", "mountPath": RECIPE_DIR, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    if spec.s3_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.s3_secret}}]
    return container


def _pod(name: str, component: str, container: dict, shm_gib: int, config_map: str,
         gpu: bool) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"labels": _labels(name, component)},
        "spec": {
            "securityContext": {"runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS},
            "containers": [container],
            "volumes": [
                # DataLoader batches and Ray's object store live in /dev/shm; a container's
                # default is 64 MB. Memory-backed: it counts against the pod's memory limit.
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}},
                {"name": "recipe", "configMap": {"name": config_map}},
            ],
        },
    }
    if gpu:  # GPU node pools are commonly tainted so that only GPU work lands there
        pod["spec"]["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return pod


def _worker_group(group: str, image: str, spec: DeploySpec, recipe, config_map: str, name: str,
                  *, gpus: int, cpus: int, memory_gib: int, bounds: tuple[int, int, int]):
    shm, store = _shm_gib(recipe, gpus)
    replicas, low, high = bounds
    container = _container("ray-worker", image, spec, cpus=cpus, memory_gib=memory_gib,
                           gpus=gpus)
    return {
        "groupName": group,
        "replicas": replicas,
        "minReplicas": low,
        "maxReplicas": high,
        "rayStartParams": {"object-store-memory": str(store * GIB)},
        "template": _pod(name, f"worker-{group}", container, shm, config_map, gpu=gpus > 0),
    }


def _cluster_spec(recipe, spec: DeploySpec, name: str, config_map: str) -> dict[str, Any]:
    autoscale = spec.kind == "raycluster"
    head = _container("ray-head", spec.image, spec, cpus=8, memory_gib=32)
    head["ports"] = [{"containerPort": 6379, "name": "gcs-server"},
                     {"containerPort": 8265, "name": "dashboard"},
                     {"containerPort": 10001, "name": "client"}]
    n = spec.workers
    groups = [_worker_group(
        "gpu" if spec.gpus else "cpu", spec.image, spec, recipe, config_map, name,
        gpus=spec.gpus, cpus=spec.worker_cpus, memory_gib=spec.worker_memory_gib,
        bounds=(0, 0, n) if autoscale else (n, n, n))]
    if spec.cpu_workers:
        groups.append(_worker_group(
            "cpu", spec.cpu_image or spec.image, spec, None, config_map, name,
            gpus=0, cpus=16, memory_gib=64, bounds=(0, 0, spec.cpu_workers)))
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        # Token auth on the dashboard and GCS; KubeRay keeps the token in a Secret named
        # after the cluster (key auth_token) and hands it to the pods and the job submitter.
        "authOptions": {"mode": "token"},
        "enableInTreeAutoscaling": autoscale,
        "headGroupSpec": {
            # No tasks on the head (its CPUs serve GCS, the dashboard and the job's driver);
            # Ray Train's controller asks for no CPU, so it still runs beside the driver.
            "rayStartParams": {"num-cpus": "0", "object-store-memory": str(2 * GIB)},
            "template": _pod(name, "head", head, 3, config_map, gpu=False),
        },
        "workerGroupSpecs": groups,
    }
    if autoscale:
        cluster["autoscalerOptions"] = {"upscalingMode": "Default", "idleTimeoutSeconds": 600}
    if spec.redis_address:
        cluster["gcsFaultToleranceOptions"] = _gcs_fault_tolerance(spec)
    return cluster


def _gcs_fault_tolerance(spec: DeploySpec) -> dict[str, Any]:
    """KubeRay's GCS fault tolerance with an external Redis. KubeRay sets the head's
    RAY_REDIS_ADDRESS and REDIS_PASSWORD from these (it refuses them set by hand), and gives the
    workers 600 s to find a restarted head (RAY_gcs_rpc_server_reconnect_timeout_s)."""
    options: dict[str, Any] = {"redisAddress": spec.redis_address}
    if spec.redis_secret:  # never a value here: the password stays in the Secret
        options["redisPassword"] = {"valueFrom": {"secretKeyRef": {
            "name": spec.redis_secret, "key": "password"}}}
    return options


def build_manifests(recipe, spec: DeploySpec) -> list[dict[str, Any]]:
    """The ConfigMap holding `recipe` and the RayJob or RayCluster that runs it (`plan` first)."""
    limit = MAX_RAYJOB_NAME if spec.kind == "rayjob" else MAX_RAYCLUSTER_NAME
    base = spec.name or recipe.name or recipe.output.rstrip("/").rsplit("/", 1)[-1]
    name = resource_name(base, limit=limit)
    config_map = f"{name}-recipe"
    meta = {"name": config_map, "labels": _labels(name, "recipe")}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    raw = recipe.model_dump(mode="json")
    text = yaml.safe_dump({"kind": raw.pop("kind"), **raw}, sort_keys=False)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"recipe.yaml": text}}]
    cluster = _cluster_spec(recipe, spec, name, config_map)
    meta = {k: v for k, v in meta.items() if k != "labels"} | {
        "name": name, "labels": _labels(name, spec.kind)}
    if spec.kind == "raycluster":
        docs.append({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta,
                     "spec": cluster})
        return docs
    docs.append({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": {
        "entrypoint": f"hypernym run {RECIPE_PATH}",
        "submissionMode": "K8sJobMode",
        # A new cluster per retry would start a new MLflow run: hypernym restarts its own
        # worker group from the last checkpoint instead (scaling.max_failures).
        "backoffLimit": 0,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": spec.ttl_seconds,
        "rayClusterSpec": cluster,
    }})
    return docs


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded recipe) as literal blocks, readable in the manifest."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def dump_manifests(docs: list[dict[str, Any]], header: str = "") -> str:
    """Multi-document YAML, with `header` as leading comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=100)
    return "\n".join(lines) + ("\n" if lines else "") + body
