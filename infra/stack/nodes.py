"""Ray nodes that share nothing but the network, on one machine.

Each node is ``ray start ... --block`` in its own process group, inside its own Linux mount
namespace (``unshare --mount --propagation private``, needs root), on its own loopback address:

- empty private tmpfs mounts over ``/tmp``, ``/dev/shm`` and the paths the caller names (the
  client's hypernym home, its temp dir): the node sees none of the client's files, and nothing
  it writes there is seen by anyone else; its HOME and hypernym home are inside its own /tmp;
- the Python installation and the hypernym package stay visible (read-only where they had to be
  mounted back): they are the "cluster image";
- a ``shared`` folder, when given, is bound back read-write at the same path on every node:
  the tests' sample trace, a declared stand-in for a log collector; hypernym never uses it.

Killing a node kills its process group and then anything left in its mount namespace, as a
host that dies takes all its processes with it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

from infra.stack.procs import autogroup_nice, free_port, spawn, stop_group, wait_for

__all__ = ["Node", "alive_ips", "image_paths", "kill_node", "namespace_pids", "settle",
           "start_node",
           "unshare_problem"]

_AGENT_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                "runtime-env-agent-port", "metrics-export-port")
_OBJECT_STORE = 100 * 1024**2  # bytes; a small store is plenty for these nodes
_START_NICE = -15  # a node's niceness while it starts (see start_node)


@dataclass
class Node:
    name: str
    ip: str
    pgid: int
    log: str
    mnt_ns: str = ""  # /proc/<pid>/ns/mnt of the node, to find every process of it
    started: float = 0.0  # time.time() of the start

    def as_dict(self) -> dict:
        return asdict(self)


def unshare_problem() -> str | None:
    """Why nodes cannot get their own mount namespace here, or None when they can."""
    if sys.platform != "linux":
        return "the multi-host rig needs Linux mount namespaces"
    try:
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare is not available: {exc}"
    if out.returncode:
        return f"`unshare --mount` is not permitted here (needs root): {out.stderr.strip()}"
    return None


def image_paths() -> list[Path]:
    """What a node runs from: this Python installation and the hypernym package's root."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    spec = find_spec("hypernym")
    if spec and spec.submodule_search_locations:
        paths.add(Path(spec.submodule_search_locations[0]).resolve().parent)
    return sorted(paths)


def _namespace_script(*, hide: list[Path], image: list[Path], shared: Path | None,
                      ray_dir: Path, home: str, argv: list[str]) -> str:
    """The bash that sets up a node's mounts, then becomes ``ray start``.

    Mounted back over the empty tmpfs: the image paths (read-only, same path), ``shared``
    (same path), and ``ray_dir`` as the node's own Ray temp dir ``/tmp/ray``, so its logs
    outlive it on the host (a log collector's view; no other node sees them).
    """
    hidden = sorted({Path("/tmp"), Path("/dev/shm"), *hide}, key=lambda p: len(p.parts))
    binds = [(p, p, "ro") for p in image if any(p.is_relative_to(h) for h in hidden)]
    binds += [(shared, shared, "rw")] if shared else []
    binds.append((ray_dir, Path("/tmp/ray"), "rw"))
    lines = ["set -eu"]
    for i, (src, _, _) in enumerate(binds):  # opened before they are covered up
        lines.append(f"exec {i + 3}<{shlex.quote(str(src))}")
    for path in hidden:
        q = shlex.quote(str(path))
        lines.append(f"if [ -d {q} ]; then mount -t tmpfs -o mode=1777 hypernym-node {q}; fi")
    for i, (_, dst, mode) in enumerate(binds):
        q = shlex.quote(str(dst))
        # --no-canonicalize: mount(8) would otherwise turn /proc/self/fd/N into the path it
        # names and look that path up again here, under the tmpfs: where source and target
        # are the same path, it would bind the empty tmpfs folder onto itself.
        lines.append(f"mkdir -p {q}; mount --no-canonicalize --bind /proc/self/fd/{i + 3} {q};"
                     f" exec {i + 3}<&-")
        if mode == "ro":
            lines.append(f"mount --no-canonicalize -o remount,bind,ro {q}")
    lines.append(f"mkdir -p {shlex.quote(home)}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines)


def start_node(name: str, ip: str, *, state: Path, env: dict[str, str], num_cpus: int,
               head_gcs: str | None = None, gcs_port: int = 0, dashboard_port: int = 0,
               hide: list[Path] = (), shared: Path | None = None) -> Node:
    """Start a head (``head_gcs`` None: GCS on ``ip:gcs_port``, dashboard on ``ip:dashboard_
    port``) or a worker joining ``head_gcs``; returns once ``ray start`` is running."""
    ray = str(Path(sys.executable).parent / "ray")
    argv = [ray, "start", "--block", "--node-ip-address", ip, "--num-cpus", str(num_cpus),
            "--temp-dir", "/tmp/ray", "--disable-usage-stats",
            "--object-store-memory", str(_OBJECT_STORE),
            *[f"--{flag}={free_port()}" for flag in _AGENT_PORTS]]
    if head_gcs is None:
        argv += ["--head", "--port", str(gcs_port), "--dashboard-host", ip,
                 "--dashboard-port", str(dashboard_port), "--include-dashboard", "true",
                 f"--ray-client-server-port={free_port()}"]
    else:
        argv += ["--address", head_gcs]
    home = "/tmp/node-home"
    node_env = {
        **env,
        "HOME": home,
        "HYPERNYM_HOME": "/tmp/hypernym-home",
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        # Not RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: it makes `ray start --address` refuse to
        # join. --node-ip-address pins each node's address; job drivers read it from the
        # node's session dir.
        "RAY_AUTH_MODE": "disabled",  # loopback only and hermetic: no token
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",  # the node's log is current when something goes wrong
        # Patience for a loaded machine: an agent or worker that takes over a minute to start
        # would otherwise crash the raylet or fail the task.
        "RAY_agent_register_timeout_ms": "300000",
        "RAY_raylet_start_wait_time_s": "300",  # the raylet's wait for its agents' port files
        "RAY_worker_register_timeout_seconds": "300",
    }
    spec = find_spec("hypernym")
    if spec and spec.submodule_search_locations:  # a source checkout: the package root
        node_env["PYTHONPATH"] = str(Path(spec.submodule_search_locations[0]).parent)
    ray_dir = state / "nodes" / f"{name}-ray"
    ray_dir.mkdir(parents=True, exist_ok=True)
    script = _namespace_script(hide=list(hide), image=image_paths(), shared=shared,
                               ray_dir=ray_dir, home=home, argv=argv)
    log = state / "nodes" / f"{name}.log"
    pidfile = state / "nodes" / f"{name}.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    # Ray's raylet gives its dashboard agent a fixed ~15 s to start; on a saturated machine the
    # agent's imports take longer and the raylet aborts. The node starts at a raised priority
    # (as root), lowered back by `settle` once it has joined.
    boost = ["nice", "-n", str(_START_NICE)] if os.geteuid() == 0 else []
    proc = spawn([*boost, "unshare", "--mount", "--propagation", "private", "--",
                  "bash", "-c", script], env=node_env, log=log, pidfile=pidfile)
    if boost:
        autogroup_nice(proc.pid, _START_NICE)
    node = Node(name=name, ip=ip, pgid=proc.pid, log=str(log), started=time.time())
    wait_for(lambda: _ray_runs(proc.pid), timeout_s=60, what=f"Ray node {name}",
             alive=lambda: proc.poll() is None, log=log)
    node.mnt_ns = os.readlink(f"/proc/{proc.pid}/ns/mnt")  # its own, once ray runs
    return node


def _ray_runs(pid: int) -> bool:
    """Whether the node's process has become ``ray start``: in its own mount namespace, the
    mounts done. (Its earlier commands, nice, unshare and bash, carry "ray start" in their
    arguments too, before the namespace exists.)"""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        own = os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False
    return own and Path(args[0].decode()).name not in ("nice", "unshare", "bash") \
        and b"start" in args[1:3]


def namespace_pids(node: Node) -> list[int]:
    """Every process in the node's mount namespace (its whole "host")."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == node.mnt_ns:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def raylet_running(node: Node) -> bool:
    """Whether the node's raylet is alive (``ray start`` can outlive a raylet that gave up)."""
    for pid in namespace_pids(node):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.split("(", 1)[1].startswith("raylet)") and stat.rsplit(")", 1)[1].split()[0] != "Z":
            return True
    return False


def settle(node: Node) -> None:
    """Back to normal priority: every process of a node that has joined (and so what its
    raylet starts from now on)."""
    autogroup_nice(node.pgid, 0)
    for pid in namespace_pids(node):
        try:
            if os.getpriority(os.PRIO_PROCESS, pid) < 0:
                os.setpriority(os.PRIO_PROCESS, pid, 0)
        except OSError:  # gone meanwhile
            pass


def kill_node(node: Node, *, graceful: bool = False) -> None:
    """End a node: its process group, then whatever else runs in its namespace."""
    stop_group(node.pgid, first=signal.SIGTERM if graceful else signal.SIGKILL,
               grace_s=5 if graceful else 0)
    if node.mnt_ns and node.mnt_ns != os.readlink("/proc/self/ns/mnt"):
        for pid in namespace_pids(node):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive_ips(dashboard: str) -> list[str]:
    """The node addresses the head reports alive."""
    url = f"{dashboard}/api/v0/nodes?limit=100&detail=false"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.load(resp)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return []
    return sorted(n["node_ip"] for n in result if n.get("state") == "ALIVE")
