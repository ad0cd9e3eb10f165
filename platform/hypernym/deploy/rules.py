"""Rules a manifest must pass beyond its schema: KubeRay's own checks, then this project's.

KubeRay's operator checks a RayCluster or RayJob when it reconciles it, after `kubectl apply`
has already succeeded (v1.7.0, `ray-operator/controllers/ray/utils/validation.go`:
`ValidateRayClusterSpec` with its GCS fault-tolerance rules, `ValidateRayJobSpec`, the metadata
checks). A broken manifest then shows up as a failed resource in the cluster; `check_manifests`
finds the same mistakes before anything is applied. Written from those rules, not generated, so
only the rules reachable with the fields hypernym uses are here; the schema test
(tests/unit/deploy/) covers field names and types. The project's rules follow: /dev/shm,
resource limits, credentials only from Secrets.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["check_manifests", "ray_pod_templates"]

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Env names whose value is a credential: these must come from a Secret, never inline.
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|"
                          r"API_KEY)", re.IGNORECASE)
_URI_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def _int(value: Any) -> int | None:
    """An integer field's value; None when absent or mistyped (the schema reports that)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def ray_pod_templates(cluster: dict) -> list[tuple[str, dict]]:
    """(name, pod template) of the head group and every worker group of a RayClusterSpec."""
    out = [("head", cluster.get("headGroupSpec", {}).get("template", {}))]
    for group in cluster.get("workerGroupSpecs") or []:
        out.append((f"worker group {group.get('groupName')!r}", group.get("template", {})))
    return out


def _ray_container(template: dict) -> dict:
    containers = template.get("spec", {}).get("containers") or [{}]
    return containers[0]  # KubeRay's RayContainerIndex: the first container runs Ray


def _kuberay_cluster(cluster: dict, where: str) -> list[str]:
    """ValidateRayClusterSpec (the rules reachable with the fields hypernym uses)."""
    errs: list[str] = []
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    head = cluster.get("headGroupSpec")
    if not head:
        return [f"{where}: headGroupSpec is missing (a Ray cluster needs a head)"]
    if not head.get("template", {}).get("spec", {}).get("containers"):
        errs.append(f"{where}: headGroupSpec should have at least one container")
    groups = cluster.get("workerGroupSpecs") or []
    for group in groups:
        name = group.get("groupName")
        low, high = _int(group.get("minReplicas")), _int(group.get("maxReplicas"))
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errs.append(f"{where}: worker group {name} should have at least one container")
        if not autoscaling and (low is None or high is None):
            errs.append(f"{where}: worker group {name} must set both minReplicas and "
                        "maxReplicas when autoscaling is disabled")
        for key, value in (("minReplicas", low), ("maxReplicas", high)):
            if value is not None and value < 0:
                errs.append(f"{where}: worker group {name} has negative {key} {value}")
        if low is not None and high is not None and low > high:
            errs.append(f"{where}: worker group {name} has minReplicas {low} greater than "
                        f"maxReplicas {high}")
    for label, group in [("Head", head)] + [(g.get("groupName"), g) for g in groups]:
        params = group.get("rayStartParams") or {}
        if group.get("resources") and any(params.get(k) for k in
                                          ("num-cpus", "num-gpus", "memory", "resources")):
            errs.append(f"{where}: resource fields should not be set in both rayStartParams "
                        f"and Resources for {label} group; please use only one")
        if "labels" in params:
            errs.append(f"{where}: rayStartParams['labels'] is not supported for {label} group; "
                        "use the top-level labels field instead")
    head_env = {e.get("name") for e in _ray_container(head.get("template", {})).get("env") or []}
    if not autoscaling and "RAY_enable_autoscaler_v2" in head_env:
        errs.append(f"{where}: RAY_enable_autoscaler_v2 cannot be set when "
                    "enableInTreeAutoscaling is false")
    if autoscaling:
        for label, template in ray_pod_templates(cluster):
            policy = template.get("spec", {}).get("restartPolicy")
            if policy not in (None, "", "Never"):
                errs.append(f"{where}: restartPolicy for {label} should be Never or unset "
                            "when using autoscaler V2")
    if (cluster.get("authOptions") or {}).get("mode") == "token":
        version = cluster.get("rayVersion", "")
        if not version or _version(version) < (2, 52, 0):
            errs.append(f"{where}: authOptions.mode is 'token' but rayVersion is "
                        f"{version or 'not set'}; Ray 2.52.0 or later is required")
    return errs


def _kuberay_gcs_ft(cluster: dict, annotations: dict, where: str) -> list[str]:
    """ValidateRayClusterSpec's GCS fault-tolerance rules (and validateGcsFaultToleranceBackend)."""
    errs: list[str] = []
    options = cluster.get("gcsFaultToleranceOptions")
    head = cluster.get("headGroupSpec") or {}
    params = head.get("rayStartParams") or {}
    env = {e.get("name") for e in _ray_container(head.get("template", {})).get("env") or []}
    if annotations.get("ray.io/ft-enabled") and options is not None:
        errs.append(f"{where}: ray.io/ft-enabled annotation and GcsFaultToleranceOptions are "
                    "both set; use only GcsFaultToleranceOptions")
    enabled = options is not None or str(annotations.get("ray.io/ft-enabled")).lower() == "true"
    if not enabled and "RAY_REDIS_ADDRESS" in env:
        errs.append(f"{where}: RAY_REDIS_ADDRESS is set, which implicitly enables GCS fault "
                    "tolerance, but GcsFaultToleranceOptions is not set")
    if options is not None:
        for found, message in (
                (params.get("redis-password"), "`redis-password` in rayStartParams"),
                ("REDIS_PASSWORD" in env, "`REDIS_PASSWORD` env var in the head Pod"),
                ("RAY_REDIS_ADDRESS" in env, "`RAY_REDIS_ADDRESS` env var in the head Pod"),
                (annotations.get("ray.io/external-storage-namespace"),
                 "the `ray.io/external-storage-namespace` annotation")):
            if found:
                errs.append(f"{where}: cannot set {message} when GcsFaultToleranceOptions is "
                            "enabled; use GcsFaultToleranceOptions instead")
        if options.get("backend", "redis") == "redis" and options.get("storage") is not None:
            errs.append(f"{where}: cannot set GcsFaultToleranceOptions.Storage when backend is "
                        "'redis'")
        if options.get("backend") == "rocksdb":
            redis = [k for k in ("redisAddress", "redisUsername", "redisPassword",
                                 "externalStorageNamespace") if options.get(k)]
            errs += [f"{where}: cannot set GcsFaultToleranceOptions.{k} when backend is "
                     "'rocksdb'" for k in redis]
    if params.get("redis-username") or "REDIS_USERNAME" in env:
        errs.append(f"{where}: cannot set redis username in rayStartParams or environment "
                    "variables; use GcsFaultToleranceOptions.RedisUsername instead")
    return errs


def _kuberay_job(spec: dict, where: str) -> list[str]:
    """ValidateRayJobSpec."""
    errs: list[str] = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    ttl = _int(spec.get("ttlSecondsAfterFinished")) or 0
    if spec.get("suspend") and not shutdown:
        errs.append(f"{where}: a RayJob with shutdownAfterJobFinishes set to false is not "
                    "allowed to be suspended")
    if ttl < 0:
        errs.append(f"{where}: TTLSecondsAfterFinished must be a non-negative integer")
    if ttl > 0 and not shutdown:
        errs.append(f"{where}: a RayJob with shutdownAfterJobFinishes set to false cannot have "
                    "TTLSecondsAfterFinished")
    selector = spec.get("clusterSelector") or {}
    if not spec.get("rayClusterSpec") and not selector:
        errs.append(f"{where}: one of RayClusterSpec or ClusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        errs.append(f"{where}: cluster name in ClusterSelector should not be empty")
    backoff = _int(spec.get("backoffLimit"))
    if spec.get("submissionMode") == "InteractiveMode" and backoff and backoff > 0:
        errs.append(f"{where}: BackoffLimit is incompatible with InteractiveMode")
    if backoff is not None and backoff < 0:
        errs.append(f"{where}: backoffLimit must be a positive integer")
    deadline = _int(spec.get("activeDeadlineSeconds"))
    if deadline is not None and deadline <= 0:
        errs.append(f"{where}: activeDeadlineSeconds must be a positive integer")
    if spec.get("rayClusterSpec"):
        errs += _kuberay_cluster(spec["rayClusterSpec"], f"{where}.rayClusterSpec")
    return errs


def _kuberay_name(doc: dict, where: str) -> list[str]:
    name = doc.get("metadata", {}).get("name", "")
    limit = 53 if doc["kind"] == "RayCluster" else 47  # MaxRayClusterNameLength (- 6 for a job)
    if len(name) > limit:
        return [f"{where}: {doc['kind']} name should be no more than {limit} characters"]
    if not _DNS1035.match(name):
        return [f"{where}: {doc['kind']} name {name!r} should be a valid DNS1035 label"]
    return []


def _project(cluster: dict, where: str, config_maps: set[str]) -> list[str]:
    """hypernym's own rules for every Ray pod."""
    errs: list[str] = []
    for key in ("redisPassword", "redisUsername"):
        if ((cluster.get("gcsFaultToleranceOptions") or {}).get(key) or {}).get("value"):
            errs.append(f"{where}: gcsFaultToleranceOptions.{key} has an inline value; use "
                        "valueFrom.secretKeyRef")
    names = [g.get("groupName") for g in cluster.get("workerGroupSpecs") or []]
    for name in {n for n in names if names.count(n) > 1}:
        # KubeRay 1.7 does not reject this, but pods of both groups would share one label.
        errs.append(f"{where}: worker group name {name!r} is used more than once")
    for label, template in ray_pod_templates(cluster):
        pod = template.get("spec", {})
        container = _ray_container(template)
        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        for key in ("cpu", "memory"):
            if key not in limits:  # Ray sizes itself from the limits
                errs.append(f"{where} {label}: the Ray container has no {key} limit")
        gpu_group = label.startswith("worker group 'gpu") or "nvidia.com/gpu" in requests
        if gpu_group and not limits.get("nvidia.com/gpu"):
            errs.append(f"{where} {label}: a GPU group without an nvidia.com/gpu limit gets no "
                        "GPU (Kubernetes schedules extended resources by their limit)")
        shm = {v.get("name") for v in pod.get("volumes") or []
               if (v.get("emptyDir") or {}).get("medium") == "Memory"}
        if not any(m.get("mountPath") == "/dev/shm" and m.get("name") in shm
                   for m in container.get("volumeMounts") or []):
            errs.append(f"{where} {label}: no memory-backed emptyDir at /dev/shm (DataLoader "
                        "batches and Ray's object store need more than the 64 MB default)")
        for volume in pod.get("volumes") or []:
            wanted = (volume.get("configMap") or {}).get("name")
            if wanted and wanted not in config_maps:
                errs.append(f"{where} {label}: ConfigMap {wanted!r} is not in these manifests")
    return errs


def _inline_secrets(node: Any, where: str) -> list[str]:
    """Credentials written into a manifest instead of referenced from a Secret."""
    errs: list[str] = []
    if isinstance(node, dict):
        name, value = node.get("name"), node.get("value")
        if isinstance(name, str) and "value" in node and _SECRET_NAME.search(name):
            errs.append(f"{where}: env {name} has an inline value; use valueFrom.secretKeyRef")
        if isinstance(value, str) and _URI_WITH_PASSWORD.search(value):
            errs.append(f"{where}: env {name} holds a URI with a password; keep it in a Secret")
        for key, child in node.items():
            errs += _inline_secrets(child, f"{where}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            errs += _inline_secrets(child, f"{where}[{i}]")
    return errs


def check_manifests(docs: list[dict]) -> list[str]:
    """Every problem found in a set of manifests (empty when they pass)."""
    errs: list[str] = []
    config_maps = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
    for i, doc in enumerate(docs):
        kind = doc.get("kind")
        where = f"{kind} {doc.get('metadata', {}).get('name', f'#{i}')}"
        if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
            errs.append(f"{where}: a Secret with values does not belong in the repository; "
                        "create it with kubectl (docs/deploy.md)")
        errs += _inline_secrets(doc, where)
        annotations = doc.get("metadata", {}).get("annotations") or {}
        if kind == "RayCluster":
            errs += _kuberay_name(doc, where) + _kuberay_cluster(doc.get("spec", {}), where)
            errs += _kuberay_gcs_ft(doc.get("spec", {}), annotations, where)
            errs += _project(doc.get("spec", {}), where, config_maps)
        elif kind == "RayJob":
            errs += _kuberay_name(doc, where) + _kuberay_job(doc.get("spec", {}), where)
            errs += _kuberay_gcs_ft(doc.get("spec", {}).get("rayClusterSpec") or {},
                                    annotations, f"{where}.rayClusterSpec")
            errs += _project(doc.get("spec", {}).get("rayClusterSpec") or {}, where,
                             config_maps)
    return errs
