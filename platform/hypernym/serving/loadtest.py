"""Load tests of an image-classification HTTP server: closed loops, p99, "at equal p99".

A closed loop is what a fixed pool of users does: each client posts a request, waits for the
answer, posts the next (keep-alive), so throughput and latency settle where the server can keep
up. `closed_loop` runs ``clients`` of them (threads, spread over processes when one Python
process could not post fast enough) until ``requests`` are answered or ``seconds`` pass.
`compare` sets two servers' runs side by side at equal p99: for each p99 bound, the best
throughput each reached within it. `ServerProcess` starts a server command, waits until it
answers and stops its whole process group. `tests/benchmarks/serve.py` and `hypernym
gpu-check` use these.

Hand-written because the usual load tools (locust, wrk, ab) are not dependencies of hypernym,
and none of them reports throughput under a p99 bound across client counts.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from hypernym.errors import HypernymError

__all__ = ["RunStats", "ServerProcess", "closed_loop", "compare", "format_run", "free_port",
           "routed_status"]


def routed_status(url: str) -> tuple[bool, int | None]:
    """Whether a GET on ``url`` reached the application, and its status (None: no answer).

    A GET carries no images, so the model answers 400 or 405; Ray Serve's proxy answers 404
    before the application is routed, and 5xx or no answer means not up yet.
    """
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = None
    return status is not None and status < 500 and status != 404, status


@dataclass
class RunStats:
    """One closed-loop run against one server."""

    server: str
    clients: int
    ok: int
    errors: int
    wall_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    load: float  # the 1-minute load average when the run began

    def as_dict(self) -> dict:
        return asdict(self)


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clients(port: int, path: str, body: bytes, *, threads: int, requests: int,
             stop_at: float, start_at: float) -> tuple[list[float], int]:
    """``threads`` closed loops in this process; (latencies in s, errors)."""
    latencies: list[float] = []
    errors, issued = [0], [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.time() < stop_at:
            with lock:  # a request is counted when it is sent: exactly `requests` in all
                if issued[0] >= requests:
                    return
                issued[0] += 1
            began = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                data = answer.read()
                ok = answer.status == 200 and (b'"error": null' in data or
                                               b'"error":null' in data)
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors[0] += 1

    time.sleep(max(0.0, start_at - time.time()))
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, errors[0]


def closed_loop(port: int, path: str, body: bytes, *, server: str, clients: int,
                requests: int, seconds: float, processes: int = 1) -> RunStats:
    """``clients`` closed loops posting ``body`` to ``127.0.0.1:port/path``.

    Args:
        requests: stop once this many are answered (in all), or
        seconds: once this long has passed.
        processes: spread the clients over this many processes (one Python process posts a
            few thousand small requests a second at most; a GPU server may answer more).
    """
    load = os.getloadavg()[0]
    processes = max(1, min(processes, clients))
    began = time.time()
    if processes == 1:
        latencies, errors = _clients(port, path, body, threads=clients, requests=requests,
                                     stop_at=began + seconds, start_at=began)
    else:  # a common start time: the processes take a moment to spawn
        start_at = began + 2.0
        share = [clients // processes + (i < clients % processes) for i in range(processes)]
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_clients_kw, [
                dict(port=port, path=path, body=body, threads=n,
                     requests=-(-requests * n // clients), stop_at=start_at + seconds,
                     start_at=start_at) for n in share]))
        latencies = [x for part, _ in parts for x in part]
        errors = sum(e for _, e in parts)
        began = start_at
    wall = max(time.time() - began, 1e-9)
    latencies.sort()
    n = len(latencies)
    return RunStats(server=server, clients=clients, ok=n, errors=errors, wall_s=wall,
                    rps=n / wall, load=load,
                    p50_ms=1000 * latencies[n // 2] if n else float("nan"),
                    p99_ms=1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"))


def _clients_kw(kwargs: dict) -> tuple[list[float], int]:
    return _clients(**kwargs)


def format_run(r: RunStats) -> str:
    return (f"{r.server:22s} {r.clients:4d} clients {r.ok:6d} ok {r.errors:3d} err "
            f"{r.rps:8.1f} req/s  p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  "
            f"load {r.load:5.2f}")


def _best(rows: list[RunStats], bound: float) -> RunStats | None:
    """The highest-throughput clean run whose p99 stays within ``bound`` ms."""
    fits = [r for r in rows if r.errors == 0 and r.ok and r.p99_ms <= bound]
    return max(fits, key=lambda r: r.rps) if fits else None


def compare(base: list[RunStats], other: list[RunStats]) -> dict:
    """``other`` against ``base`` at equal p99.

    Returns:
        ``bounds``: for every p99 seen, each server's best throughput within it and the ratio;
        ``at_base_best``: at the p99 of base's best clean run, other's best throughput within
        that p99 and the ratio (None when other never stayed within it); ``best_any``: the
        ratio of the best throughputs, whatever their p99.
    """
    clean = [r for r in base if r.errors == 0 and r.ok]
    if not clean or not any(r.errors == 0 and r.ok for r in other):
        return {"bounds": [], "at_base_best": None, "best_any": None}
    bounds = []
    for bound in sorted({r.p99_ms for r in base + other if r.ok and r.errors == 0}):
        b, o = _best(base, bound), _best(other, bound)
        if b and o:
            bounds.append({"p99_ms": bound, "base_rps": b.rps, "base_clients": b.clients,
                           "rps": o.rps, "clients": o.clients, "ratio": o.rps / b.rps})
    top = max(clean, key=lambda r: r.rps)
    within = _best(other, top.p99_ms)
    top_other = max((r for r in other if r.errors == 0 and r.ok), key=lambda r: r.rps)
    return {
        "bounds": bounds,
        "at_base_best": {"p99_ms": top.p99_ms, "base_rps": top.rps,
                         "rps": within.rps if within else None,
                         "p99_ms_other": within.p99_ms if within else None,
                         "ratio": within.rps / top.rps if within else None},
        "best_any": {"rps": top_other.rps, "p99_ms": top_other.p99_ms, "base_rps": top.rps,
                     "base_p99_ms": top.p99_ms, "ratio": top_other.rps / top.rps},
    }


class ServerProcess:
    """A server command in its own process group, output in ``log``; `stop` ends the group."""

    def __init__(self, cmd: list[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_answering(self, url: str, *, timeout_s: float) -> None:
        """Until ``url`` answers a GET with a status below 500 other than 404 (Ray Serve's
        proxy answers 404 before the application is routed; the model answers a GET with
        400 or 405).

        Raises:
            HypernymError: the server exited, or did not answer in time (with its log's tail).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HypernymError(f"server exited with {self.proc.returncode}:\n"
                                    + self.tail())
            if routed_status(url)[0]:
                return
            time.sleep(0.5)
        raise HypernymError(f"{url} did not answer in {timeout_s:.0f} s:\n" + self.tail())

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM the group (the server's own shutdown), then SIGKILL whatever of the group
        is left (forked workers that outlived their parent)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout_s)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
