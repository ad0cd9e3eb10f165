"""`hypernym deploy render`: Kubernetes manifests for a recipe (thin over hypernym.deploy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError

from hypernym.errors import HypernymError

__all__ = ["deploy_app"]

deploy_app = typer.Typer(no_args_is_help=True)


@deploy_app.command()
def render(
    recipe: Annotated[Path, typer.Argument(help="the recipe the cluster runs")],
    image: Annotated[str, typer.Option(help="image of the Ray pods, with its tag "
                                       "(infra/Dockerfile)")],
    gpus: Annotated[int, typer.Option(help="GPUs per worker pod (0: CPU pods)")] = 8,
    workers: Annotated[int, typer.Option(help="worker pods (a RayCluster's autoscaling "
                                         "maximum)")] = 1,
    kind: Annotated[Literal["rayjob", "raycluster"], typer.Option(
        help="rayjob: a cluster for this run, removed after it; raycluster: a long-lived "
        "autoscaling cluster")] = "rayjob",
    storage: Annotated[str | None, typer.Option(help="HYPERNYM_STORAGE: where checkpoints go "
                                                "(s3://bucket/prefix)")] = None,
    name: Annotated[str | None, typer.Option(help="resource name (default: the recipe's)")]
    = None,
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace")] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs per worker pod (default 10 per GPU)")]
    = None,
    memory_gib: Annotated[int | None, typer.Option(
        "--memory-gib", help="memory per worker pod, /dev/shm included (default 64 per GPU)")]
    = None,
    cpu_workers: Annotated[int, typer.Option(help="extra autoscaled CPU pods (raycluster)")] = 0,
    cpu_image: Annotated[str | None, typer.Option(help="image of the CPU group "
                                                  "(infra/Dockerfile.cpu)")] = None,
    tracking_uri: Annotated[str, typer.Option(help="MLFLOW_TRACKING_URI seen from the pods")]
    = "http://mlflow:5000",
    s3_secret: Annotated[str, typer.Option(help="Secret with the S3 variables ('' for IAM "
                                           "roles)")] = "hypernym-s3",
    tracking_secret: Annotated[str, typer.Option(help="Secret with username/password of the "
                                                 "tracking server ('' for none)")]
    = "hypernym-tracking",
    ttl_seconds: Annotated[int, typer.Option(help="a finished RayJob's cluster stays this "
                                             "long")] = 3600,
    redis_address: Annotated[str | None, typer.Option(
        help="HOST:PORT of an external Redis: KubeRay's GCS fault tolerance (raycluster)")]
    = None,
    redis_secret: Annotated[str, typer.Option(help="Secret with the Redis password (key "
                                              "password; '' for none)")] = "hypernym-redis",
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a recipe key: "
                                                   "key.path=value")] = None,
) -> None:
    """Print the ConfigMap and RayJob (or RayCluster) that run RECIPE on Kubernetes."""
    from hypernym.config import load_recipe
    from hypernym.deploy import DeploySpec, dump_manifests
    from hypernym.deploy import render as render_manifests

    loaded = load_recipe(recipe, set_ or [])  # the recipe is validated before anything else
    try:
        spec = DeploySpec(
            image=image, kind=kind, name=name, namespace=namespace, gpus=gpus, workers=workers,
            cpus=cpus, memory_gib=memory_gib, cpu_workers=cpu_workers, cpu_image=cpu_image,
            storage=storage, tracking_uri=tracking_uri, s3_secret=s3_secret or None,
            tracking_secret=tracking_secret or None, ttl_seconds=ttl_seconds,
            redis_address=redis_address, redis_secret=redis_secret or None)
    except ValidationError as exc:
        raise HypernymError("invalid deploy flags:\n" + "\n".join(
            f"  - --{'-'.join(map(str, e['loc'])).replace('_', '-')}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
    docs = render_manifests(loaded, spec)
    planned = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["recipe.yaml"]
    if hasattr(loaded, "scaling") and f"num_workers: {loaded.scaling.num_workers}\n" not in planned:
        typer.echo(f"note: scaling.num_workers is now {spec.workers * max(spec.gpus, 1)} (was "
                   f"{loaded.scaling.num_workers}): the global batch changes with it; scale "
                   "optim.lr to match if the recipe's was tuned for its own count", err=True)
    flags = [("--kind", kind, "rayjob"), ("--image", image, None), ("--gpus", gpus, None),
             ("--workers", workers, None), ("--storage", storage, None), ("--name", name, None),
             ("--namespace", namespace, None), ("--cpus", cpus, None),
             ("--memory-gib", memory_gib, None), ("--cpu-workers", cpu_workers, 0),
             ("--cpu-image", cpu_image, None), ("--tracking-uri", tracking_uri,
                                                 "http://mlflow:5000"),
             ("--s3-secret", s3_secret, "hypernym-s3"),
             ("--tracking-secret", tracking_secret, "hypernym-tracking"),
             ("--ttl-seconds", ttl_seconds, 3600), ("--redis-address", redis_address, None),
             ("--redis-secret", redis_secret, "hypernym-redis")]
    words = [f"{flag} {value}" for flag, value, default in flags if value != default]
    words += [f"--set {item}" for item in set_ or []]
    header = (f"Rendered by: hypernym deploy render {recipe} {' '.join(words)}\n"
              "Edit the recipe and render again rather than editing this file (docs/deploy.md).")
    typer.echo(dump_manifests(docs, header), nl=False)
