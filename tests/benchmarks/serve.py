"""Serving load test: `hypernym serve` (Ray Serve, dynamic batching) against `mlflow models
serve`, on the same registered model and the same JPEG, in one run.

For each model (a small one, then resnet50 at 224 px, where batching matters more), registers a
timm model with random weights (the work per image does not depend on them) in a throwaway
registry, then starts each server in turn on a free 127.0.0.1 port, alone on the machine, and
drives it with closed loops (`hypernym.serving.loadtest`): for each client count, that many
clients post one JPEG per request back to back (keep-alive) until ``--requests`` are answered
or ``--seconds`` pass. `hypernym serve` runs once per ``--ingress`` (haproxy, direct and proxy on
the small model; ``--large-ingress``, haproxy, on resnet50).
Prints every run (throughput, p50/p99, load average), then for each ingress the comparison at
equal p99: at mlflow's best point (its highest throughput, and that run's p99), the best
throughput `hypernym serve` reached within the same p99, and the ratio.

    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py
    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py --ingress haproxy --no-large
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "platform")]
BIN = Path(sys.executable).parent


def _ints(text: str) -> list[int]:
    return [int(c) for c in text.split(",")]


def _register(root: Path, arch: str, size: int) -> None:
    import timm

    from hypernym.registry.card import ModelCard
    from hypernym.registry.models import register_model
    from hypernym.tracking import start_run
    from tests.integration.registry.helpers import settings_at

    settings = settings_at(root)
    run_id = start_run(experiment="bench", run_name="bench", settings=settings)
    card = ModelCard(arch=arch, num_classes=16, input_size=[3, size, size], mean=[0.5] * 3,
                     std=[0.25] * 3, task="pretrain", run_id=run_id,
                     classes=[{"id": f"c{i}", "name": f"class {i}"} for i in range(16)])
    register_model(run_id=run_id, name="bench", model=timm.create_model(arch, num_classes=16),
                   card=card, alias="bench", settings=settings)


def _body(width: int, height: int) -> tuple[bytes, int]:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    body = {"dataframe_split": {"columns": ["image"], "data": [[
        base64.b64encode(buffer.getvalue()).decode()]]}}
    return json.dumps(body).encode(), len(buffer.getvalue())


def _sweep(name: str, cmd: list[str], port: int, path: str, body: bytes, env: dict,
           log: Path, clients: list[int], args) -> list:
    """Start one server, warm it up, then one closed-loop run per client count."""
    from hypernym.serving.loadtest import closed_loop, format_run
    from tests.servers import routed, start_server

    rows = []
    # raises with the server's log tail if it exits or is not routed in time
    with start_server(cmd, url=f"http://127.0.0.1:{port}", ready_path=path, log=log, env=env,
                      timeout_s=300, accept=routed):
        closed_loop(port, path, body, server=name, clients=max(clients),
                    requests=args.warmup, seconds=60)
        for n in clients:
            rows.append(closed_loop(port, path, body, server=name, clients=n,
                                    requests=args.requests, seconds=args.seconds))
            print(format_run(rows[-1]), flush=True)
    return rows


def _summary(label: str, base: list, rays: dict[str, list]) -> None:
    from hypernym.serving.loadtest import compare

    for ingress, rows in rays.items():
        result = compare(base, rows)
        print(f"\n== {label}: hypernym serve --ingress {ingress} against mlflow models serve")
        for b in result["bounds"]:
            print(f"  p99 <= {b['p99_ms']:7.1f} ms: mlflow {b['base_rps']:6.1f} req/s "
                  f"({b['base_clients']:2d})  hypernym {b['rps']:6.1f} req/s "
                  f"({b['clients']:2d})  {b['ratio']:.2f}x")
        at, best = result["at_base_best"], result["best_any"]
        if at is None:
            print("  no clean run to compare")
            continue
        print(f"  at mlflow's best point (p99 {at['p99_ms']:.0f} ms, {at['base_rps']:.1f} "
              "req/s): " + (f"hypernym {at['rps']:.1f} req/s with p99 {at['p99_ms_other']:.0f} "
                            f"ms -> {at['ratio']:.2f}x" if at["rps"] else
                            "hypernym reached no run within that p99"))
        print(f"  best throughput at any p99: {best['ratio']:.2f}x (hypernym {best['rps']:.1f} "
              f"p99 {best['p99_ms']:.0f} ms, mlflow {best['base_rps']:.1f} p99 "
              f"{best['base_p99_ms']:.0f} ms)")


def _model(label: str, arch: str, size: int, image: tuple[int, int], clients: list[int],
           ingresses: list[str], args) -> None:
    from tests.servers import free_port

    body, jpeg = _body(*image)
    print(f"\n### {label}: {arch} at {size}px, {image[0]}x{image[1]} JPEG ({jpeg} B), "
          f"{os.cpu_count()} CPUs; hypernym serve: 1 replica x {args.num_cpus:g} CPU, batches "
          f"of up to {args.max_batch_size}, {args.batch_wait_ms:g} ms wait {args.ray_args}; "
          f"mlflow models serve: {args.mlflow_workers or 'its default'} workers", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _register(root, arch, size)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "HYPERNYM_HOME": str(root), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO / "platform"),
               # uvicorn is started by name: the venv's bin/ must be on PATH
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        port = free_port()
        mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/bench@bench",
                      "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        if args.mlflow_workers:
            mlflow_cmd += ["--workers", str(args.mlflow_workers)]
        # One server at a time: each gets the whole machine while it is measured.
        base = _sweep("mlflow models serve", mlflow_cmd, port, "/invocations", body, env,
                      root / "mlflow.log", clients, args)
        rays = {}
        for ingress in ingresses:
            port = free_port()
            cmd = [str(BIN / "python"), "-m", "hypernym", "serve", "bench@bench",
                   "--port", str(port), "--ingress", ingress, "--num-cpus", str(args.num_cpus),
                   "--max-batch-size", str(args.max_batch_size),
                   "--batch-wait-ms", str(args.batch_wait_ms), *shlex.split(args.ray_args)]
            rays[ingress] = _sweep(f"hypernym ({ingress})", cmd, port, "/", body, env,
                                   root / f"ray-{ingress}.log", clients, args)
    _summary(label, base, rays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--img-size", type=int, default=64, help="the model's input size")
    parser.add_argument("--image", type=int, nargs=2, default=(160, 120), metavar=("W", "H"),
                        help="the posted JPEG's size")
    parser.add_argument("--clients", type=_ints, default=[4, 8, 16, 32],
                        help="client counts to sweep, e.g. 4,8,16")
    parser.add_argument("--no-large", dest="large", action="store_false",
                        help="skip the second model (resnet50 at 224 px, a 500x375 JPEG)")
    parser.add_argument("--large-clients", type=_ints, default=[2, 4, 8])
    parser.add_argument("--large-ingress", type=lambda s: s.split(","), default=["haproxy"],
                        help="hypernym serve's --ingress values for the second model")
    parser.add_argument("--requests", type=int, default=1500, help="per run, at most")
    parser.add_argument("--seconds", type=float, default=20, help="per run, at most")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--mlflow-workers", type=int, default=None,
                        help="uvicorn workers (default: mlflow's, the CPU count)")
    parser.add_argument("--ingress", type=lambda s: s.split(","),
                        default=["haproxy", "direct", "proxy"],
                        help="hypernym serve's --ingress values to measure on the small model")
    parser.add_argument("--ray-args", default="", help="more `hypernym serve` flags, quoted")
    parser.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1),
                        help="CPUs of the replica (torch threads)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    _model("small model", args.arch, args.img_size, tuple(args.image), args.clients,
           args.ingress, args)
    if args.large:
        _model("resnet50", "resnet50", 224, (500, 375), args.large_clients, args.large_ingress,
               args)


if __name__ == "__main__":
    main()
