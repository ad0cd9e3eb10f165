"""`hypernym serve` (Ray Serve, batching, on the device) against `mlflow models serve` (on the
device too: the registered pyfunc uses the GPU when torch sees one), the pretrained backbone,
one of the generated JPEGs, closed loops at each client count, compared at equal p99."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from hypernym.gpucheck.pipeline import raw_jpeg
from hypernym.serving.loadtest import ServerProcess, closed_loop, compare, format_run, free_port

__all__ = ["serve_comparison"]


def _commands(ctx, ref: str, ports: dict[str, int]) -> dict[str, list[str]]:
    cfg = ctx.config
    bin_dir = Path(sys.executable).parent
    mlflow = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{ref}",
              "--env-manager", "local", "--host", "127.0.0.1", "--port", str(ports["mlflow"])]
    if cfg.mlflow_workers:
        mlflow += ["--workers", str(cfg.mlflow_workers)]
    replicas = cfg.replicas
    hypernym = [sys.executable, "-m", "hypernym", "serve", ref, "--port", str(ports["hypernym"]),
                "--replicas", str(replicas), "--num-cpus", str(max(1, (cfg.cpus - 1) // replicas)),
                "--max-batch-size", str(cfg.serve_max_batch_size),
                "--batch-wait-ms", str(cfg.serve_batch_wait_ms),
                "--max-ongoing-requests", str(max(64, cfg.serve_max_batch_size * 2))]
    if cfg.serve_ingress:
        hypernym += ["--ingress", cfg.serve_ingress]
    if ctx.device == "cuda":
        hypernym += ["--num-gpus", f"{1 / replicas:.4f}"]
    return {"mlflow models serve": mlflow, "hypernym serve": hypernym}


def serve_comparison(ctx) -> dict[str, Any]:
    """Both servers, measured in turn: throughput, p50/p99, and the ratio at equal p99 (at
    mlflow's best point: its highest throughput and that run's p99)."""
    cfg = ctx.config
    ref = ctx.results["pretrain_loader"]["registered"]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[
        base64.b64encode(raw_jpeg(ctx)).decode()]]}}).encode()
    ports = {"mlflow": free_port(), "hypernym": free_port()}
    paths = {"mlflow models serve": ("mlflow", "/invocations"),
             "hypernym serve": ("hypernym", "/")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": ctx.settings.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    processes = max(1, min(8, cfg.cpus // 4))  # one Python client process posts ~2-3k req/s
    commands = _commands(ctx, ref, ports)
    # Both start at once (their start-ups overlap) and are measured one at a time, while the
    # other sits idle.
    servers = {name: ServerProcess(cmd, env=env, log=ctx.work / "logs" /
                                   f"serve-{paths[name][0]}.log")
               for name, cmd in commands.items()}
    runs: dict[str, list] = {}
    try:
        for name, server in servers.items():
            key, path = paths[name]
            server.wait_answering(f"http://127.0.0.1:{ports[key]}{path}", timeout_s=180)
        for name in servers:
            key, path = paths[name]
            # warm-up: every client's connection, cuDNN's algorithms for each batch size
            closed_loop(ports[key], path, body, server=name, clients=max(cfg.serve_clients),
                        requests=max(cfg.serve_clients) * 2, seconds=15, processes=processes)
            runs[name] = []
            for clients in cfg.serve_clients:
                run = closed_loop(ports[key], path, body, server=name, clients=clients,
                                  requests=cfg.serve_requests, seconds=cfg.serve_seconds,
                                  processes=processes)
                print(format_run(run), flush=True)
                runs[name].append(run)
    finally:
        for server in servers.values():
            server.stop()
    result = compare(runs["mlflow models serve"], runs["hypernym serve"])
    at = result["at_base_best"] or {}
    log = (ctx.work / "logs" / "serve-hypernym.log").read_text(errors="replace")
    ingress = [line for line in log.splitlines() if line.startswith("ingress: ")]
    command = _commands(ctx, ref, ports)["hypernym serve"][2:]  # from `hypernym serve`
    return {"model": ref, "jpeg_bytes": len(raw_jpeg(ctx)), "replicas": cfg.replicas,
            "hypernym_command": " ".join(command),
            "ingress": ingress[-1].removeprefix("ingress: ") if ingress else None,
            "runs": {k: [r.as_dict() for r in v] for k, v in runs.items()},
            "ratio_at_equal_p99": at.get("ratio"), "comparison": result}
