"""Deploying recipes on Kubernetes with KubeRay: manifests rendered from a recipe.

`render` turns a validated recipe plus a `DeploySpec` (image, GPUs, worker pods, Secrets) into
a ConfigMap holding the recipe and a KubeRay ``RayJob`` or ``RayCluster`` that runs it, checked
by `check_manifests` (KubeRay's validation rules and the project's) before it is returned.
docs/deploy.md walks through the Kubernetes and AWS paths.
"""

from __future__ import annotations

from hypernym.deploy.manifests import RECIPE_PATH, build_manifests, dump_manifests
from hypernym.deploy.rules import check_manifests, ray_pod_templates
from hypernym.deploy.spec import RAY_VERSION, DeploySpec, plan

__all__ = [
    "RAY_VERSION",
    "RECIPE_PATH",
    "DeploySpec",
    "build_manifests",
    "check_manifests",
    "dump_manifests",
    "plan",
    "ray_pod_templates",
    "render",
]


def render(recipe, spec: DeploySpec) -> list[dict]:
    """The manifests that run `recipe` as `spec` describes.

    Raises:
        HypernymError: the recipe cannot run on a cluster as asked (a local path, no checkpoint
            storage, a flag that does not fit), or the manifests break a KubeRay rule.
    """
    from hypernym.errors import HypernymError

    docs = build_manifests(plan(recipe, spec), spec)
    problems = check_manifests(docs)
    if problems:  # a flag combination the renderer should have refused: say which rule broke
        raise HypernymError("the rendered manifests break KubeRay's rules:\n"
                            + "\n".join(f"  - {p}" for p in problems))
    return docs
