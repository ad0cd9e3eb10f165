"""The check's summary: which CUDA-only code paths ran and how they fared, and the Markdown
page (`gpu-check.md`) of the figures."""

from __future__ import annotations

from typing import Any

__all__ = ["CUDA_PATHS", "cuda_paths", "render_markdown"]

# Each CUDA-only path: where the check exercises it, and what must hold for it to count.
CUDA_PATHS: tuple[tuple[str, str, str], ...] = (
    ("bf16 autocast", "cuda_probes", "bf16 matmul under autocast; every training part too"),
    ("NCCL", "cuda_probes", "all-reduce in a process group (gloo on the CPU)"),
    ("GPU JPEG decode (data.decode_on: device)", "pretrain_device",
     "pretraining with nvJPEG decode; probe: decode_jpeg on the device against PIL"),
    ("pinned memory", "cuda_probes", "pinned host tensor, non-blocking copy; the training "
     "loader pins its batches on a GPU"),
    ("MLflow GPU system metrics", "pretrain_loader", "system/gpu_* metrics in the pretraining "
     "run (needs nvidia-ml-py: the gpu extra)"),
    ("torch.compile on CUDA", "ceiling", "compiled synthetic step; pretraining with "
     "train.compile"),
    ("FSDP2 on a GPU", "fsdp", "fully_shard of hypernym's units, steps in a one-rank group"),
    ("Ray Serve batching on a GPU", "serve", "hypernym serve with --num-gpus under load"),
    ("hypernym on the GPU (pretrain, fine-tune, eval, register)", "eval",
     "the whole chain on Ray Train with use_gpu"),
)


def _status(results: dict[str, Any], part: str) -> tuple[str, str]:
    entry = results["parts"].get(part)
    if entry is None:
        return "not run", "the check did not reach it"
    if entry["status"] != "ok":
        return ("failed" if entry["status"] == "failed" else "not run",
                entry.get("error") or entry.get("reason", ""))
    return "ok", ""


def cuda_paths(results: dict[str, Any]) -> list[dict[str, str]]:
    """Every CUDA-only path with ``ok``, ``failed`` or ``not run`` and why."""
    rows = []
    gpu = results["mode"] == "gpu"
    for path, part, how in CUDA_PATHS:
        status, why = _status(results, part)
        result = results["parts"].get(part, {}).get("result", {})
        if status == "ok" and path == "MLflow GPU system metrics":
            gpu_keys = [k for k in result.get("system_metrics", []) if "gpu" in k]
            if gpu and not gpu_keys:
                status, why = "failed", "no system/gpu_* metric was logged (nvidia-ml-py?)"
        if status == "ok" and part == "cuda_probes":
            probe = {"bf16 autocast": "bf16_autocast", "NCCL": "collectives",
                     "pinned memory": "pinned_memory"}[path]
            if result.get(probe, {}).get("skipped"):
                status, why = "not run", result[probe]["skipped"]
        if not gpu and status == "ok":
            why = "ran on the CPU (dry run)"
        rows.append({"path": path, "status": status, "part": part, "how": how,
                     "detail": why.strip().splitlines()[-1] if why.strip() else ""})
    rows.append({"path": "the images in infra/", "status": "not run", "part": "-",
                 "how": "run this check inside the GPU image (docs/gpu.md)",
                 "detail": "this run was in a container" if results["parts"].get(
                     "environment", {}).get("result", {}).get("container") else
                 "this run was not in a container"})
    return rows


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_markdown(results: dict[str, Any]) -> str:
    """The page a person reads: environment, figures, CUDA paths, then each part's status."""
    parts = results["parts"]

    def r(name: str) -> dict[str, Any]:
        return parts.get(name, {}).get("result", {}) if parts.get(name, {}).get(
            "status") == "ok" else {}

    env, ceil = r("environment"), r("ceiling")
    lines = [f"# hypernym gpu-check ({results['mode']})", "",
             f"Started {results['started']}, {results.get('wall_s', 0):.0f} s of a "
             f"{results['budget_s']:.0f} s budget"
             + ("" if results["complete"] else " (**still running or interrupted**)") + ".", "",
             "## Environment", ""]
    for key in ("gpu", "gpu_memory_gib", "compute_capability", "driver", "torch", "torch_cuda",
                "cudnn", "nccl", "torchvision", "timm", "ray", "mlflow", "hypernym", "python",
                "cpus", "memory_gib", "nvidia_ml_py", "haproxy", "container"):
        if key in env:
            lines.append(f"- {key}: {env[key]}")
    lines += ["", "## Training throughput", "",
              "| run | images/s | ratio to ceiling | data wait |", "| --- | --- | --- | --- |"]
    for label, key in (("ceiling, eager (synthetic)", "eager"),
                       ("ceiling, compiled (synthetic)", "compiled")):
        lines.append(f"| {label} | {_f(ceil.get(key, {}).get('images_per_s'))} | | |")
    for label, name in (("hypernym pretrain, loader decode", "pretrain_loader"),
                        ("hypernym pretrain, device decode", "pretrain_device")):
        p = r(name)
        lines.append(f"| {label} | {_f(p.get('images_per_s'))} | "
                     f"{_f(p.get('ratio_to_ceiling'), 3)} | {_f(p.get('data_wait_frac'), 3)} |")
    data = r("data")
    if data:
        lines += ["", f"{ceil.get('arch', '')} at {ceil.get('img_size', '')} px, batch "
                  f"{ceil.get('batch_size', '')}, bf16 autocast, channels_last; shards: "
                  f"{data['train']:,} training images of {data['classes']} classes, JPEGs of "
                  f"{data['mean_jpeg_bytes']:,} B on average."]
    lines += _serving(r("serve"))
    fine, ev = r("finetune"), r("eval")
    if fine:
        lines += ["", "## Fine-tune, eval, registration", "",
                  f"- fine-tune of {fine['backbone']}: registered {fine.get('registered')}, "
                  f"val top-1 {_f(fine.get('val_top1'), 3)}"]
    if ev:
        lines.append(f"- hypernym eval {ev['model']}: top-1 {_f(ev['top1'], 3)} on "
                     f"{ev['samples']} images ({ev['seconds']} s)")
    lines += ["", "## CUDA-only paths", "", "| path | status | how | detail |",
              "| --- | --- | --- | --- |"]
    for row in results.get("cuda_paths", []):
        lines.append(f"| {row['path']} | {row['status']} | {row['how']} | {row['detail']} |")
    lines += ["", "## Parts", "", "| part | status | seconds | note |", "| --- | --- | --- | --- |"]
    for name, entry in parts.items():
        note = entry.get("reason") or (entry.get("error") or "").strip().splitlines()[-1:]
        note = note if isinstance(note, str) else "".join(note)
        lines.append(f"| {name} | {entry['status']} | {_f(entry.get('seconds'))} | "
                     f"{note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _serving(serve: dict[str, Any]) -> list[str]:
    if not serve:
        return []
    lines = ["", "## Serving", "", f"{serve['model']}, one {serve['jpeg_bytes']:,} B JPEG per "
             f"request; `{serve['hypernym_command']}`", "",
             "| server | clients | req/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- |"]
    for runs in serve["runs"].values():
        for run in runs:
            lines.append(f"| {run['server']} | {run['clients']} | {_f(run['rps'])} | "
                         f"{_f(run['p50_ms'])} | {_f(run['p99_ms'])} |")
    at = serve["comparison"].get("at_base_best") or {}
    if at:
        lines += ["", f"At mlflow's best point (p99 {_f(at['p99_ms'], 0)} ms, "
                  f"{_f(at['base_rps'])} req/s): hypernym serve "
                  + (f"{_f(at['rps'])} req/s within that p99: **{at['ratio']:.2f}x**."
                     if at.get("ratio") else "reached no run within that p99.")]
    return lines
