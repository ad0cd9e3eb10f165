"""infra/aws/cluster.yaml passes Ray's own config validation, offline, and installs nothing.

Ray's `ray up` runs `prepare_config` (merge with the provider's defaults.yaml, fill node type
bounds) and `validate_config` (ray/autoscaler/ray-schema.json plus its cross-field checks)
before it calls any cloud API; the same two functions run here. What `ray up` does next
(IAM, security groups, subnets, AMI lookup, launching) needs an AWS account and is not checked.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml

import hypernym

from .conftest import INFRA

CLUSTER = INFRA / "aws" / "cluster.yaml"
_INSTALL = re.compile(r"\b(pip3?|uv|conda|mamba|micromamba)\s+install\b|\bapt(-get)?\s+install\b"
                      r"|\b(yum|dnf|apk)\s+(install|add)\b|curl[^|]*\|\s*(ba|z)?sh\b")
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands")


def _validated(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def installs(config: dict) -> list[str]:
    """Start-up commands that install software (the image should already hold it)."""
    commands = [c for key in COMMAND_LISTS for c in config.get(key) or []]
    for node_type in config.get("available_node_types", {}).values():
        commands += [c for key in COMMAND_LISTS for c in node_type.get(key) or []]
    return [c for c in commands if _INSTALL.search(c)]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_the_launcher_config_passes_rays_validation_and_installs_nothing(config):
    prepared = _validated(config)
    assert installs(prepared) == []
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert prepared[key] == [], key
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["ray.worker.gpu"]["resources"]["GPU"] == 8
    tag = f":{hypernym.__version__}-"
    assert prepared["docker"]["image"].endswith(f"{tag}gpu")  # infra/Dockerfile
    assert types["ray.worker.cpu"]["docker"]["worker_image"].endswith(f"{tag}cpu")
    assert not re.search(r"(?i)(secret_access_key|password)\s*[=:]\s*\S", CLUSTER.read_text())


def test_dropping_the_empty_setup_brings_rays_default_installs_back(config):
    # Ray fills a missing setup_commands from its AWS defaults, which pip-install a Ray wheel
    # on every node: the explicit empty list is what keeps start-up install-free.
    broken = {k: v for k, v in config.items() if k != "setup_commands"}
    assert any("pip install" in c for c in installs(_validated(broken)))


@pytest.mark.parametrize("edit, error", [
    (lambda c: c["docker"].update(imagee="x"), "'imagee' was unexpected"),
    (lambda c: c["available_node_types"]["ray.worker.gpu"].update(min_workers="2"),
     "'2' is not of type 'integer'"),
    (lambda c: c.update(head_node_type="ray.head.gpu"), "must be one of `available_node_types`"),
    (lambda c: c["available_node_types"]["ray.worker.gpu"].update(min_workers=9),
     "smaller than the sum of `min_workers`"),
])
def test_rays_validation_rejects_a_broken_copy(config, edit, error):
    broken = copy.deepcopy(config)
    edit(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as caught:
        _validated(broken)
    assert error in str(caught.value)
