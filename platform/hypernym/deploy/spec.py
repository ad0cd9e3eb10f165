"""What a deployment of one recipe looks like: a small typed config, checked before rendering.

`DeploySpec` holds what `hypernym deploy render` takes as flags (image, GPUs, worker pods, where
checkpoints go, which Secrets hold the credentials). `plan` checks it against the recipe and
returns the recipe as it will run on the cluster: its `scaling` section set from the flags, so
that the pods and Ray Train's worker group always agree.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hypernym.errors import HypernymError

__all__ = ["RAY_VERSION", "DeploySpec", "plan", "resource_name"]

# The Ray the images install (infra/Dockerfile's RAY_VERSION; a test keeps them equal). KubeRay
# reads it to pick its health probes and to allow token authentication.
RAY_VERSION = "2.60.0"
MAX_RAYJOB_NAME = 47  # KubeRay 1.7: a RayJob's name is its cluster's (53) less a 6-char suffix
MAX_RAYCLUSTER_NAME = 53


class DeploySpec(BaseModel):
    """The cluster around one recipe. Unknown keys are rejected.

    Attributes:
        image: container image of the Ray pods (infra/Dockerfile), with its tag.
        kind: ``rayjob`` (a cluster for one run, deleted after it) or ``raycluster`` (a
            long-lived, autoscaling cluster to submit recipes to).
        name: resource name; default: the recipe's name made a DNS-1035 label.
        namespace: Kubernetes namespace; default: the one kubectl uses.
        gpus: GPUs per worker pod (0: CPU worker pods, e.g. for a prepare recipe).
        workers: worker pods (the RayCluster's upper autoscaling bound).
        cpus: CPUs per worker pod; default 10 per GPU, or 16 for CPU pods.
        memory_gib: memory per worker pod, /dev/shm included; default 64 per GPU, or 64.
        cpu_workers: an extra autoscaled CPU worker group of up to this many pods
            (raycluster only), for prepare recipes beside training.
        cpu_image: image of that group (infra/Dockerfile.cpu); default: ``image``.
        storage: ``HYPERNYM_STORAGE``, where Ray Train keeps checkpoints (``s3://...``).
        tracking_uri: ``MLFLOW_TRACKING_URI`` as the pods reach the tracking server.
        s3_secret: Secret whose keys become the pods' environment (``AWS_ACCESS_KEY_ID``,
            ``AWS_SECRET_ACCESS_KEY``, optionally ``AWS_ENDPOINT_URL``); None with IAM roles.
        tracking_secret: Secret with keys ``username`` and ``password`` for the tracking
            server's basic auth; None for a server without auth.
        ttl_seconds: how long a finished RayJob's cluster stays for inspection.
        redis_address: ``HOST:PORT`` of an external Redis for KubeRay's GCS fault tolerance
            (raycluster only): the head's GCS state lives there, so a restarted head takes
            its workers and actors back (docs/cluster.md, "When the head dies").
        redis_secret: Secret with key ``password`` for that Redis; None for one without.
    """

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)
    kind: Literal["rayjob", "raycluster"] = "rayjob"
    name: str | None = None
    namespace: str | None = None
    gpus: int = Field(8, ge=0, le=16)
    workers: int = Field(1, ge=1, le=1000)
    cpus: int | None = Field(None, ge=1)
    memory_gib: int | None = Field(None, ge=4)
    cpu_workers: int = Field(0, ge=0)
    cpu_image: str | None = None
    storage: str | None = None
    tracking_uri: str = "http://mlflow:5000"
    s3_secret: str | None = "hypernym-s3"
    tracking_secret: str | None = "hypernym-tracking"
    ttl_seconds: int = Field(3600, ge=0)
    redis_address: str | None = None
    redis_secret: str | None = "hypernym-redis"

    @field_validator("redis_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(redis://|rediss://)?[\w.-]+:\d{1,5}", value):
            raise ValueError(f"{value!r} is not a Redis address: give HOST:PORT "
                             "(redis.default.svc.cluster.local:6379)")
        return value

    @field_validator("image", "cpu_image")
    @classmethod
    def _tagged(cls, value: str | None) -> str | None:
        if value is not None and (re.search(r"\s", value) or ":" not in value.rsplit("/", 1)[-1]
                                  and "@" not in value):
            raise ValueError(f"{value!r} is not an image reference with a tag "
                             "(REGISTRY/hypernym:0.1.0-gpu); a pinned tag keeps pods alike")
        return value

    @property
    def worker_cpus(self) -> int:
        return self.cpus or (10 * self.gpus if self.gpus else 16)

    @property
    def worker_memory_gib(self) -> int:
        return self.memory_gib or (64 * self.gpus if self.gpus else 64)


def resource_name(text: str, *, limit: int) -> str:
    """`text` as a DNS-1035 label of at most `limit` characters (what KubeRay accepts)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    name = re.sub(r"^[^a-z]+", "", name)[:limit].strip("-")
    if not name:
        raise HypernymError(f"cannot make a Kubernetes name from {text!r}: pass --name "
                            "(lower-case letters, digits and '-', starting with a letter)")
    return name


def _remote(value: str) -> bool:
    return "://" in value and not value.startswith("file://")


def plan(recipe, spec: DeploySpec):
    """Check `spec` against `recipe`; return the recipe with `scaling` set from the spec.

    Raises:
        HypernymError: a combination that cannot run on a cluster, with the flag to change.
    """
    from hypernym.config import PrepareRecipe, parse_recipe

    problems: list[str] = []
    # The pods share nothing but the network: every path the run reads or writes must be a URI.
    if isinstance(recipe, PrepareRecipe):
        paths = {"source": recipe.source, "output": recipe.output}
        if spec.gpus:
            problems.append("a prepare recipe runs on CPUs: pass --gpus 0")
    else:
        paths = {"data.path": recipe.data.path}
        if not spec.storage:
            problems.append("--storage is required for training: checkpoints must be reachable "
                            "from every pod (e.g. --storage s3://bucket/hypernym/runs)")
        elif not _remote(spec.storage):
            problems.append(f"--storage {spec.storage!r} is a local path; pods share no disk: "
                            "use s3://bucket/prefix")
    for key, value in paths.items():
        if not _remote(value):
            problems.append(f"{key} is {value!r}, a local path that the pods cannot read: "
                            f"--set {key}=s3://bucket/prefix")
    if spec.cpu_workers and spec.kind != "raycluster":
        problems.append("--cpu-workers needs --kind raycluster (a RayJob's cluster has a fixed "
                        "size, so an autoscaled CPU group would never start)")
    if spec.redis_address and spec.kind != "raycluster":
        problems.append("--redis-address (GCS fault tolerance) needs --kind raycluster: it keeps "
                        "a long-lived cluster's workers through a head restart, while a RayJob "
                        "ends with its driver, which a head restart loses anyway")
    if spec.cpu_workers and not spec.gpus:
        problems.append("--cpu-workers adds a CPU group beside a GPU group; with --gpus 0 the "
                        "workers are CPU pods already: size them with --workers")
    if spec.gpus and spec.worker_cpus < spec.gpus:
        problems.append(f"--cpus {spec.worker_cpus} is fewer than one per GPU ({spec.gpus})")
    if problems:
        raise HypernymError("cannot deploy this recipe:\n" + "\n".join(f"  - {p}"
                                                                    for p in problems))
    if isinstance(recipe, PrepareRecipe):
        return recipe
    raw = recipe.model_dump(mode="json")
    per_pod = max(spec.gpus, 1)  # Ray Train workers per pod: one per GPU, or one CPU worker
    raw["scaling"].update(
        num_workers=spec.workers * per_pod,
        use_gpu=spec.gpus > 0,
        # Ray's CPU count only schedules: loader processes are not bound by it. Reserving all
        # of a pod's CPUs for the worker group would leave none for any other task or actor
        # on it (a probe, an upload) and stall it, so at least one stays unreserved.
        cpus_per_worker=max(1, (spec.worker_cpus - 1) // per_pod),
    )
    return parse_recipe(raw, source="recipe with the deploy flags")
