"""Serving load test: Ray Serve with dynamic batching against `mlflow models serve`, same run.

Registers a timm model (random weights: the work per image does not depend on them) in a
throwaway registry, starts each server in turn on a free 127.0.0.1 port and drives it with
closed loops: for each client count of ``--clients``, that many threads post one JPEG per
request back to back (keep-alive) until ``--requests`` are answered or ``--seconds`` pass.
Prints throughput, p50/p99 latency and the 1-minute load average per run, then, for every p99
bound seen, the best throughput each server reached within it and the ratio ("at equal p99").
Stops its servers itself.

    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py
    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py --ray-ingress proxy,direct
    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py --arch resnet50 \
        --img-size 224 --image 500 375 --clients 2,4,8
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "platform")]
BIN = Path(sys.executable).parent


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


def _load(port: int, path: str, body: bytes, *, clients: int, requests: int,
          seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.perf_counter() < stop_at:
            with lock:
                if len(latencies) + errors[0] >= requests:
                    return
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                ok = response.status == 200 and b'"error": null' in response.read().replace(
                    b'"error":null', b'"error": null')
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    latencies.sort()
    n = len(latencies)
    return {"ok": n, "errors": errors[0], "wall_s": wall, "rps": n / wall,
            "p50_ms": 1000 * latencies[n // 2] if n else float("nan"),
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan")}


def _sweep(name: str, cmd: list[str], port: int, path: str, body: bytes, env: dict,
           log_path: Path, args) -> list[dict]:
    """Start one server, warm it up, then one closed-loop run per client count."""
    from tests.servers import routed, start_server

    rows = []
    # raises with the server's log tail if it exits or is not routed in time
    with start_server(cmd, url=f"http://127.0.0.1:{port}", ready_path=path, log=log_path,
                      env=env, timeout_s=300, accept=routed):
        _load(port, path, body, clients=max(args.clients), requests=args.warmup, seconds=60)
        for clients in args.clients:
            load = os.getloadavg()[0]
            r = _load(port, path, body, clients=clients, requests=args.requests,
                      seconds=args.seconds)
            r.update(server=name, clients=clients, load=load)
            rows.append(r)
            print(f"{name:20s} {clients:3d} clients {r['ok']:5d} ok {r['errors']:3d} err "
                  f"{r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                  f"  load {load:5.2f}", flush=True)
    return rows


def _best(rows: list[dict], bound: float) -> dict | None:
    """The highest-throughput run whose p99 stays within ``bound`` ms (None if none does)."""
    fits = [r for r in rows if r["errors"] == 0 and r["ok"] and r["p99_ms"] <= bound]
    return max(fits, key=lambda r: r["rps"]) if fits else None


def _summary(base: list[dict], ray: list[dict], p99_ms: float | None) -> None:
    """Best throughput of each server under the same p99 bounds, and the ratios."""
    bounds = sorted({r["p99_ms"] for r in base + ray if r["ok"]})
    if p99_ms:
        bounds = [p99_ms]
    print("\nbest throughput under the same p99 bound (clients in brackets):")
    for bound in bounds:
        b, r = _best(base, bound), _best(ray, bound)
        if b is None or r is None:
            continue
        print(f"  p99 <= {bound:7.1f} ms: mlflow {b['rps']:6.1f} req/s ({b['clients']:2d})  "
              f"ray {r['rps']:6.1f} req/s ({r['clients']:2d})  "
              f"ray/mlflow {r['rps'] / b['rps']:.2f}x")
    top = max(base, key=lambda r: r["rps"])  # mlflow's operating point: its best throughput
    r = _best(ray, top["p99_ms"])
    print(f"at mlflow's best point (p99 {top['p99_ms']:.0f} ms, {top['rps']:.1f} req/s): "
          + (f"ray {r['rps']:.1f} req/s with p99 {r['p99_ms']:.0f} ms -> "
             f"{r['rps'] / top['rps']:.2f}x" if r else "ray reached no run under that p99"))
    top_ray = max(ray, key=lambda r: r["rps"])
    print(f"best throughput at any p99: ray/mlflow {top_ray['rps'] / top['rps']:.2f}x "
          f"(ray {top_ray['rps']:.1f} p99 {top_ray['p99_ms']:.0f} ms, mlflow {top['rps']:.1f} "
          f"p99 {top['p99_ms']:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--img-size", type=int, default=64, help="the model's input size")
    parser.add_argument("--image", type=int, nargs=2, default=(160, 120), metavar=("W", "H"),
                        help="the posted JPEG's size")
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")],
                        default=[4, 8, 16, 32], help="client counts to sweep, e.g. 4,8,16")
    parser.add_argument("--requests", type=int, default=1500, help="per run, at most")
    parser.add_argument("--seconds", type=float, default=20, help="per run, at most")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--p99-ms", type=float, default=None,
                        help="compare only under this p99 bound (default: every bound seen)")
    parser.add_argument("--mlflow-workers", type=int, default=None,
                        help="uvicorn workers (default: mlflow's, the CPU count)")
    parser.add_argument("--mlflow-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for mlflow models serve, e.g. OMP_NUM_THREADS=1")
    parser.add_argument("--ray-args", default="", help="more `hypernym serve` flags, quoted")
    parser.add_argument("--ray-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for hypernym serve (Ray Serve's feature flags)")
    parser.add_argument("--ray-ingress", default="proxy",
                        help="proxy (Serve's HTTP proxy), direct (the replica's own HTTP port: "
                        "Ray Serve's direct-ingress feature flag, no proxy hop, one replica) "
                        "or proxy,direct (both, one after the other)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1),
                        help="CPUs per Ray Serve replica (torch threads)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    import io
    import shlex

    import numpy as np
    from PIL import Image

    from tests.servers import free_port

    pixels = np.random.default_rng(0).integers(0, 255, (args.image[1], args.image[0], 3),
                                               dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[
        base64.b64encode(buffer.getvalue()).decode()]]}}).encode()
    print(f"{args.arch} at {args.img_size}px, {args.image[0]}x{args.image[1]} JPEG "
          f"({len(buffer.getvalue())} B), {os.cpu_count()} CPUs; ray: {args.replicas} "
          f"replica(s) x {args.num_cpus:g} CPU, max_batch_size {args.max_batch_size}, wait "
          f"{args.batch_wait_ms:g} ms {args.ray_args} {' '.join(args.ray_env)}; mlflow: "
          f"{args.mlflow_workers or 'default'} workers {' '.join(args.mlflow_env)}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _register(root, args.arch, args.img_size)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "HYPERNYM_HOME": str(root), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO / "platform"),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        ports = {"mlflow": free_port(), "ray": free_port()}
        mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/bench@bench",
                      "--env-manager", "local", "--host", "127.0.0.1",
                      "--port", str(ports["mlflow"])]
        if args.mlflow_workers:
            mlflow_cmd += ["--workers", str(args.mlflow_workers)]
        ray_cmd = [str(BIN / "python"), "-m", "hypernym", "serve", "bench@bench",
                   "--port", str(ports["ray"]), "--replicas", str(args.replicas),
                   "--num-cpus", str(args.num_cpus), "--max-batch-size",
                   str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
                   *shlex.split(args.ray_args)]
        # One server at a time: each gets the whole machine while it is measured.
        base = _sweep("mlflow models serve", mlflow_cmd, ports["mlflow"], "/invocations", body,
                      {**env, **dict(kv.split("=", 1) for kv in args.mlflow_env)},
                      root / "mlflow.log", args)
        ray_env = {**env, **dict(kv.split("=", 1) for kv in args.ray_env)}
        rays = {}
        for ingress in args.ray_ingress.split(","):
            target, extra = ports["ray"], {}
            if ingress == "direct":  # the replica binds a port from this range (exactly one)
                target = free_port()
                extra = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                         "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(target),
                         "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(target + 1)}  # exclusive
            rays[ingress] = _sweep(f"ray serve ({ingress})", ray_cmd, target, "/", body,
                                   {**ray_env, **extra}, root / f"ray-{ingress}.log", args)
    for ingress, ray in rays.items():
        print(f"\n== ray serve ({ingress}) against mlflow models serve")
        _summary(base, ray, args.p99_ms)


if __name__ == "__main__":
    main()
