"""The environment, and direct probes of the CUDA-only code paths (each one small and quick).

On the CPU (the dry run) every probe runs its CPU twin where there is one (gloo for NCCL,
torchvision's CPU decoder for nvJPEG) so the code cannot rot; a path with no CPU twin (pinned
memory) says so.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["cuda_probes", "environment", "fsdp_smoke"]


def environment(ctx) -> dict[str, Any]:
    """GPU, driver, CUDA, cuDNN, NCCL, torch, Ray, MLflow, hypernym; CPUs and memory."""
    import ray
    import timm
    import torch
    import torchvision

    import hypernym

    info: dict[str, Any] = {
        "python": platform.python_version(), "executable": sys.executable,
        "hypernym": hypernym.__version__, "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__,
        "ray": ray.__version__, "mlflow": _version("mlflow"), "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "container": Path("/.dockerenv").exists() or Path("/run/.containerenv").exists(),
        "haproxy": _haproxy(),
    }
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            nccl=_nccl_version(),
            driver=_driver(), nvidia_ml_py=_version("nvidia-ml-py"))
    return info


def _nccl_version() -> str:
    import torch

    version = torch.cuda.nccl.version()  # a tuple (2, 27, 3); an int in some older builds
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _driver() -> str | None:
    """The NVIDIA driver: from NVML (nvidia-ml-py), else nvidia-smi."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            return driver.decode() if isinstance(driver, bytes) else driver
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - missing package or library: ask nvidia-smi instead
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def _haproxy() -> str:
    from hypernym.serving.ingress import find_haproxy

    path, origin = find_haproxy()
    return origin if path else f"none: {origin}"


def cuda_probes(ctx) -> dict[str, Any]:
    """bf16 autocast, pinned memory, nvJPEG, NCCL: each {"ok": bool, ...}; the part fails
    when any of them does."""
    import torch

    device = torch.device(ctx.device)
    out: dict[str, Any] = {}
    for name, probe in (("bf16_autocast", _bf16), ("pinned_memory", _pinned),
                        ("jpeg_decode", _jpeg), ("collectives", _collectives)):
        began = time.perf_counter()
        try:
            out[name] = {"ok": True, **probe(device)}
        except Exception as exc:  # noqa: BLE001 - a probe's failure is its result
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.perf_counter() - began, 2)
    failed = [name for name, r in out.items() if not r["ok"]]
    if failed:
        raise ProbeFailure(f"failed: {', '.join(failed)}", out)
    return out


class ProbeFailure(RuntimeError):
    """Some probes failed; ``results`` holds every probe's outcome for the report."""

    def __init__(self, message: str, results: dict[str, Any]) -> None:
        super().__init__(message)
        self.results = results


def _bf16(device) -> dict[str, Any]:
    import torch

    a = torch.randn(256, 256, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        product = a @ a
    exact = (a.double() @ a.double()).float()
    error = ((product.float() - exact).abs().max() / exact.abs().max()).item()
    assert product.dtype == torch.bfloat16, f"autocast gave {product.dtype}"
    assert error < 0.05, f"bf16 matmul relative error {error:.3g}"
    return {"dtype": str(product.dtype), "relative_error": round(error, 5)}


def _pinned(device) -> dict[str, Any]:
    import torch

    if device.type != "cuda":
        return {"skipped": "pinned memory needs CUDA"}
    host = torch.arange(1 << 22, dtype=torch.float32).pin_memory()
    assert host.is_pinned()
    began = time.perf_counter()
    on_device = host.to(device, non_blocking=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    assert torch.equal(on_device.cpu(), host)
    return {"gb_per_s": round(host.numel() * 4 / seconds / 1e9, 1)}


def _jpeg(device) -> dict[str, Any]:
    """A batch of JPEGs decoded on the device (nvJPEG on a GPU), checked against PIL."""
    import io

    import numpy as np
    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg

    rng = np.random.default_rng(0)
    files, references = [], []
    for _ in range(8):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        files.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
        references.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    decoded = decode_jpeg(files, device=device)
    worst = max(np.abs(d.permute(1, 2, 0).cpu().numpy().astype(int) - r.astype(int)).mean()
                for d, r in zip(decoded, references, strict=True))
    # nvJPEG and libjpeg round differently: a mean difference of a few levels is expected
    assert worst < 8, f"decoded pixels differ from PIL's by {worst:.1f} levels on average"
    return {"images": len(files), "device": str(decoded[0].device),
            "mean_abs_diff_vs_pil": round(float(worst), 2)}


def _collectives(device) -> dict[str, Any]:
    """An all-reduce in a one-rank process group: NCCL on a GPU, gloo on the CPU."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/rendezvous", rank=0,
                                world_size=1, device_id=device if device.type == "cuda" else None)
        try:
            tensor = torch.ones(1024, device=device)
            dist.all_reduce(tensor)
            dist.barrier()
            assert tensor.sum().item() == 1024
        finally:
            dist.destroy_process_group()
    return {"backend": backend, "nccl": _nccl_version() if backend == "nccl" else None}


def fsdp_smoke(ctx) -> dict[str, Any]:
    """A few training steps of the model sharded with FSDP2 as hypernym shards it
    (`hypernym.train.distributed.shard_units`, then the root), in a one-rank process group.

    One GPU cannot hold two NCCL ranks, and hypernym's `scaling.strategy: fsdp` shards only
    across several ranks, so this is the smoke test of FSDP2 itself on this device and stack.
    """
    import timm
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule, fully_shard
    from torch.distributed.tensor import DTensor

    from hypernym.train.distributed import shard_units

    cfg, device = ctx.config, torch.device(ctx.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    batch = max(2, cfg.batch_size // 4)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/rendezvous", rank=0,
                                world_size=1, device_id=device if device.type == "cuda" else None)
        try:
            model = timm.create_model(cfg.arch, num_classes=cfg.classes).to(device)
            units = shard_units(model)
            for unit in units:
                fully_shard(unit)
            fully_shard(model)
            assert isinstance(model, FSDPModule)
            assert all(isinstance(p, DTensor) for p in model.parameters())
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=device)
            y = torch.randint(0, cfg.classes, (batch,), device=device)
            losses = []
            began = time.perf_counter()
            for _ in range(3):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
            seconds = time.perf_counter() - began
        finally:
            dist.destroy_process_group()
    assert all(torch.isfinite(torch.tensor(losses))), f"losses {losses}"
    return {"backend": backend, "units": len(units), "batch": batch, "steps": len(losses),
            "losses": [round(v, 4) for v in losses], "seconds_per_step": round(seconds / 3, 3)}
