"""Offline validation of Kubernetes manifests: schemas first, then KubeRay's and our rules.

What checks what (docs/deploy.md repeats this):

- Core kinds (ConfigMap, Deployment, Service, Secret, ...): Kubernetes' own OpenAPI schemas as
  shipped by the `kubernetes-validate` package, in their strict form (unknown fields rejected),
  for every version in `K8S_VERSIONS`.
- RayCluster / RayJob: `schemas/kuberay-ray.io-v1.json`, written for this project from KubeRay
  v1.7.0's API types (no PyPI package ships KubeRay's CRD schema, and files fetched from KubeRay's
  repository are not vendored here). Their metadata and every pod template inside (head, worker
  groups, the job submitter) go through the core `ObjectMeta` and `PodTemplateSpec` schemas.
- Then `hypernym.deploy.check_manifests`: the rules KubeRay's operator enforces
  (utils/validation.go) and the project's (/dev/shm, limits, credentials only from Secrets).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource

from hypernym.deploy import check_manifests, ray_pod_templates

__all__ = ["K8S_VERSIONS", "load_docs", "validate_docs"]

# The oldest Kubernetes minor still in wide support at KubeRay 1.7's time and the newest schema
# kubernetes-validate 1.37 ships: a manifest valid on both uses no field that is new or gone.
K8S_VERSIONS = ("1.30", "1.37")
RAY_SCHEMA = Path(__file__).parent / "schemas" / "kuberay-ray.io-v1.json"


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


@functools.cache
def _core_validator(version: str, schema_file: str) -> jsonschema.Validator:
    # kubernetes_validate.validate() only takes whole resources (apiVersion + kind); embedded
    # objects such as a PodTemplateSpec need the schema file itself, resolved the same way.
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = root / f"v{version}.0-local-strict"
    schema = json.loads((folder / schema_file).read_text())
    defs = json.loads((folder / "_definitions.json").read_text())
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(defs) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _ray_validator() -> jsonschema.Validator:
    return jsonschema.Draft202012Validator(json.loads(RAY_SCHEMA.read_text()))


def _resource_file(doc: dict) -> str:
    group, _, version = doc["apiVersion"].rpartition("/")
    group = group.split(".")[0]
    return f"{doc['kind'].lower()}-{group + '-' if group else ''}{version}.json"


def _errors(validator: jsonschema.Validator, obj, where: str) -> list[str]:
    return [f"{where}{'.' if e.path else ''}{'.'.join(map(str, e.path))}: {e.message[:300]}"
            for e in validator.iter_errors(obj)]


def _ray_errors(doc: dict, where: str, version: str) -> list[str]:
    errs = [f"{where}: {e.message[:300]}" for e in _ray_validator().iter_errors(doc)]
    if errs:  # oneOf hides the reason: validate against the kind's own definition for detail
        kind_schema = {"$ref": f"#/$defs/{doc.get('kind')}"} | {
            "$defs": json.loads(RAY_SCHEMA.read_text())["$defs"]}
        errs = _errors(jsonschema.Draft202012Validator(kind_schema), doc, where) or errs
    errs += _errors(_core_validator(version, "objectmeta-meta-v1.json"),
                    doc.get("metadata", {}), f"{where} metadata")
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec") if doc.get("kind") == "RayJob" else spec
    templates = ray_pod_templates(cluster or {})
    if spec.get("submitterPodTemplate"):
        templates.append(("submitter", spec["submitterPodTemplate"]))
    pod_schema = _core_validator(version, "podtemplatespec-v1.json")
    for label, template in templates:
        errs += _errors(pod_schema, template, f"{where} {label} template")
    return errs


def validate_docs(docs: list[dict]) -> list[str]:
    """Every problem in `docs` (empty when all pass), each naming the document and field."""
    errs: list[str] = []
    for version in K8S_VERSIONS:
        for i, doc in enumerate(docs):
            where = f"[k8s {version}] {doc.get('kind')} {doc.get('metadata', {}).get('name', i)}"
            if doc.get("apiVersion", "").startswith("ray.io/"):
                errs += _ray_errors(doc, where, version)
                continue
            try:
                validator = _core_validator(version, _resource_file(doc))
            except (FileNotFoundError, KeyError):
                errs.append(f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
                continue
            errs += _errors(validator, doc, where)
    return errs + check_manifests(docs)
