"""Serving load test: Ray Serve with dynamic batching against `mlflow models serve`, same run.

Registers a timm model (random weights: the work per image does not depend on them) in a
throwaway registry, starts both servers on free 127.0.0.1 ports, and drives each with the same
closed loop: ``--clients`` threads, each posting one JPEG per request back to back (keep-alive),
until ``--requests`` requests are answered or ``--seconds`` pass. Prints throughput and p50/p99
latency per server and the ratios. Stops its servers itself.

    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py
    PYTHONPATH=platform .venv/bin/python tests/benchmarks/serve.py --clients 32 --max-batch-size 32
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
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


def _wait(url: str, proc: subprocess.Popen, deadline: float) -> None:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"{url} did not answer in time")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--img-size", type=int, default=64, help="the model's input size")
    parser.add_argument("--image", type=int, nargs=2, default=(160, 120), metavar=("W", "H"),
                        help="the posted JPEG's size")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1500, help="per server, at most")
    parser.add_argument("--seconds", type=float, default=45, help="per server, at most")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--mlflow-workers", type=int, default=None,
                        help="uvicorn workers (default: mlflow's, the CPU count)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1),
                        help="CPUs per Ray Serve replica (torch threads)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    import io

    import numpy as np
    from PIL import Image

    from tests.integration.registry.helpers import free_port

    pixels = np.random.default_rng(0).integers(0, 255, (args.image[1], args.image[0], 3),
                                               dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[
        base64.b64encode(buffer.getvalue()).decode()]]}}).encode()

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
                   str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms)]
        results = {}
        # One server at a time: each gets the whole machine while it is measured.
        for name, cmd, path in (("mlflow models serve", mlflow_cmd, "/invocations"),
                                ("ray serve (batched)", ray_cmd, "/")):
            port = ports["mlflow" if name.startswith("mlflow") else "ray"]
            with open(root / f"{port}.log", "w") as log:
                proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            try:
                _wait(f"http://127.0.0.1:{port}{path}", proc, time.time() + 300)
                _load(port, path, body, clients=args.clients, requests=args.warmup,
                      seconds=60)
                results[name] = _load(port, path, body, clients=args.clients,
                                      requests=args.requests, seconds=args.seconds)
            finally:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
            r = results[name]
            print(f"{name:22s} {r['ok']:5d} ok {r['errors']:3d} errors  {r['rps']:7.1f} req/s"
                  f"  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms", flush=True)
    base, ray = results["mlflow models serve"], results["ray serve (batched)"]
    print(f"\n{args.arch} at {args.img_size}px, {args.image[0]}x{args.image[1]} JPEG, "
          f"{args.clients} clients, {os.cpu_count()} CPUs; ray: {args.replicas} replica(s) x "
          f"{args.num_cpus:g} CPU, max_batch_size {args.max_batch_size}, wait "
          f"{args.batch_wait_ms:g} ms")
    print(f"throughput ray/mlflow: {ray['rps'] / base['rps']:.2f}x   "
          f"p99 ray/mlflow: {ray['p99_ms'] / base['p99_ms']:.2f}x   "
          f"p50 ray/mlflow: {ray['p50_ms'] / base['p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
