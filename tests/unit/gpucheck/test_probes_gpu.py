"""The check's probes, ceiling and FSDP2 smoke on a real GPU, in process (skipped without one;
the CPU twins run in tests/e2e/test_gpu_check.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hypernym.gpucheck.ceiling import ceiling
from hypernym.gpucheck.config import GpuCheckConfig
from hypernym.gpucheck.probes import cuda_probes, environment, fsdp_smoke

pytestmark = pytest.mark.gpu


@pytest.fixture()
def ctx(tmp_path: Path):
    config = GpuCheckConfig(arch="resnet18", img_size=64, batch_size=16, classes=10,
                            ceiling_steps=3, warmup_steps=1, compile=False)
    return SimpleNamespace(config=config, device="cuda", work=tmp_path, results={})


def test_environment_names_the_gpu_driver_and_nccl(ctx):
    info = environment(ctx)
    assert info["cuda_available"] and info["gpu"] and info["driver"]
    assert info["nccl"].count(".") == 2 and info["compute_capability"]


def test_every_cuda_probe_passes(ctx):
    results = cuda_probes(ctx)
    assert results["collectives"]["backend"] == "nccl"
    assert results["jpeg_decode"]["device"].startswith("cuda")
    assert results["pinned_memory"]["gb_per_s"] > 0


def test_ceiling_and_fsdp_smoke_on_the_gpu(ctx):
    figures = ceiling(ctx)
    assert figures["eager"]["images_per_s"] > 0 and figures["eager"]["max_memory_gib"] > 0
    smoke = fsdp_smoke(ctx)
    assert smoke["backend"] == "nccl" and smoke["units"] > 1
