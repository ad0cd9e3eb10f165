"""The local multi-host rig: a Ray cluster whose nodes share nothing but the network, an S3
endpoint, and an MLflow tracking server with PostgreSQL, basic auth and artifacts on S3.

    infra/local_stack.sh up [--workers N] [--state DIR]   # prints the client's exports
    infra/local_stack.sh status | down | add-node | kill-node NAME | env
    infra/local_stack.sh kill-cluster | start-cluster [--workers N]   # lose the head, start anew

Layout (every address loopback, every port free-picked):
- S3 (moto, `infra.stack.s3`) on 127.0.0.1 with buckets ``data``, ``runs``, ``mlflow``;
- the tracking server (`infra.stack.tracking`) on 127.0.0.1, artifacts in ``s3://mlflow/``;
- a Ray head with no CPU on 127.0.0.2 (where job drivers run), workers with one CPU each on
  127.0.0.3, 127.0.0.4, ... (`infra.stack.nodes`: each in its own mount namespace).

The cluster's own settings and secrets (S3 keys, tracking credentials, HYPERNYM_STORAGE) are in
the nodes' environment, as a real cluster has them from instance roles or Kubernetes secrets;
nothing needs to travel with a job. Secrets live in ``<state>/secrets`` (0700), never in argv,
logs or printed output: the printed exports read them from there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from infra.stack import nodes as ray_nodes
from infra.stack import s3 as s3_server
from infra.stack import tracking
from infra.stack.procs import (
    free_port,
    group_alive,
    group_members,
    spawn,
    stop_group,
    wait_for,
    wait_port,
)

__all__ = ["Stack", "main"]

BUCKETS = ("data", "runs", "mlflow")
STORAGE = "s3://runs/hypernym"
HEAD_IP = "127.0.0.2"
_JOIN_S = 100  # a node not alive this long after its start is started again


class Stack:
    """A running rig, described by ``<state>/stack.json``."""

    def __init__(self, state: Path) -> None:
        self.state = Path(state).resolve()
        self.info = json.loads((self.state / "stack.json").read_text())

    # ------------------------------------------------------------------ starting
    @classmethod
    def up(cls, state: Path, *, workers: int = 2, hide: list[Path] = (),
           shared: Path | None = None, node_env: dict[str, str] | None = None) -> Stack:
        """Start everything; ``hide``: more paths the nodes must not see (the client's home);
        ``shared``: a folder every node sees (test traces only); ``node_env``: extra settings
        for every node."""
        state = Path(state).resolve()
        state.mkdir(parents=True, exist_ok=True)
        (state / "secrets").mkdir(mode=0o700, exist_ok=True)
        started = time.perf_counter()
        key = tracking._secret(state / "secrets" / "s3_access_key")
        secret = tracking._secret(state / "secrets" / "s3_secret_key")
        s3_port, gcs, dash, mlflow_port = free_port(), free_port(), free_port(), free_port()
        endpoint = f"http://127.0.0.1:{s3_port}"
        # Decided now, so the nodes can start while the tracking server is still starting.
        tracking._secret(state / "tracking" / "secrets" / "admin_password")
        aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key,
               "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}
        info = {"state": str(state), "s3": {"endpoint": endpoint, "pgid": None},
                "tracking": str(state / "tracking"), "gcs": f"{HEAD_IP}:{gcs}",
                "tracking_uri": f"http://127.0.0.1:{mlflow_port}",
                "dashboard": f"http://{HEAD_IP}:{dash}", "nodes": {}, "next_ip": 3,
                "hide": [str(p) for p in hide], "shared": str(shared) if shared else None,
                "node_env": dict(node_env or {}), "timings_s": {}}
        stack = cls.__new__(cls)
        stack.state, stack.info = state, info
        stack._save()
        try:
            stack._start(aws, workers, started)
        except BaseException:
            stack.down()
            raise
        return stack

    def _start(self, aws: dict[str, str], workers: int, started: float) -> None:
        info, errors = self.info, []
        # The tracking server starts once the Ray nodes are up: importing it takes CPU that a
        # starting raylet's agents need (Ray gives them a fixed 15 s, see nodes.start_node).
        nodes_up, nodes_ok = threading.Event(), []

        def services() -> None:  # S3, then the tracking server that keeps artifacts there
            try:
                t = time.perf_counter()
                host, port = "127.0.0.1", int(info["s3"]["endpoint"].rsplit(":", 1)[1])
                proc = spawn([sys.executable, "-m", "infra.stack.s3", "--host", host,
                              "--port", str(port)], env=self._base_env(aws),
                             log=self.state / "s3.log", pidfile=self.state / "s3.pid")
                info["s3"]["pgid"] = proc.pid
                wait_port(host, port, timeout_s=120, what="S3 endpoint",
                          alive=lambda: proc.poll() is None, log=self.state / "s3.log")
                self._make_buckets(aws)
                info["timings_s"]["s3"] = round(time.perf_counter() - t, 1)
                nodes_up.wait()
                if not nodes_ok:  # the nodes failed: the caller stops everything
                    return
                t = time.perf_counter()
                tracking.up(Path(info["tracking"]), artifacts_destination="s3://mlflow/",
                            env=self._base_env(aws), durable=False,
                            port=int(info["tracking_uri"].rsplit(":", 1)[1]))
                info["timings_s"]["tracking"] = round(time.perf_counter() - t, 1)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=services)
        thread.start()
        try:
            t = time.perf_counter()
            head = self._node("head", HEAD_IP, num_cpus=0, aws=aws, head=True)
            wait_port(HEAD_IP, int(info["gcs"].rsplit(":", 1)[1]), timeout_s=180,
                      what="Ray head (GCS)", log=Path(head.log))
            self.wait_for_nodes()
            for _ in range(workers):  # one at a time: a loaded machine starts them faster so
                self.add_node(aws=aws)
            info["timings_s"]["ray"] = round(time.perf_counter() - t, 1)
            nodes_ok.append(True)
        finally:
            nodes_up.set()
            thread.join()
            self._save()
        if errors:
            raise errors[0]
        info["timings_s"]["up"] = round(time.perf_counter() - started, 1)
        self._save()

    def _make_buckets(self, aws: dict[str, str]) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"],
                          aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
                          region_name=aws["AWS_DEFAULT_REGION"])
        for bucket in BUCKETS:
            s3.create_bucket(Bucket=bucket)

    def _base_env(self, aws: dict[str, str]) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
        return {**{k: os.environ[k] for k in keep if k in os.environ}, **aws,
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
                ).rstrip(os.pathsep)}

    def _aws(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.info["s3"]["endpoint"],
                "AWS_ACCESS_KEY_ID": (self.state / "secrets" / "s3_access_key").read_text(),
                "AWS_SECRET_ACCESS_KEY": (self.state / "secrets" / "s3_secret_key").read_text(),
                "AWS_DEFAULT_REGION": "us-east-1"}

    def cluster_env(self, aws: dict[str, str] | None = None) -> dict[str, str]:
        """What every node has in its environment: the cluster's settings and secrets."""
        password = Path(self.info["tracking"]) / "secrets" / "admin_password"
        return {**(aws or self._aws()), "MLFLOW_TRACKING_URI": self.info["tracking_uri"],
                "MLFLOW_TRACKING_USERNAME": tracking.ADMIN,
                "MLFLOW_TRACKING_PASSWORD": password.read_text().strip(),
                "HYPERNYM_STORAGE": STORAGE, **self.info["node_env"]}

    def _node(self, name: str, ip: str, *, num_cpus: int, aws: dict[str, str] | None = None,
              head: bool = False) -> ray_nodes.Node:
        gcs_port = int(self.info["gcs"].rsplit(":", 1)[1])
        dash_port = int(self.info["dashboard"].rsplit(":", 1)[1])
        node = ray_nodes.start_node(
            name, ip, state=self.state, env=self.cluster_env(aws), num_cpus=num_cpus,
            head_gcs=None if head else self.info["gcs"], gcs_port=gcs_port,
            dashboard_port=dash_port, hide=[Path(p) for p in self.info["hide"]],
            shared=Path(self.info["shared"]) if self.info["shared"] else None)
        self.info["nodes"][name] = node.as_dict()
        self.info.setdefault("node_cpus", {})[name] = num_cpus
        self.info.setdefault("started", []).append({"pgid": node.pgid, "mnt_ns": node.mnt_ns})
        self._save()
        return node

    # ------------------------------------------------------------------ operations
    def add_node(self, *, wait: bool = True, aws: dict[str, str] | None = None,
                 cpus: int = 1) -> ray_nodes.Node:
        """A fresh worker node (``cpus`` CPUs, empty home) on the next loopback address."""
        n = self.info["next_ip"]
        self.info["next_ip"] = n + 1
        node = self._node(f"worker-{n - 2}", f"127.0.0.{n}", num_cpus=cpus, aws=aws)
        self._save()
        if wait:
            self.wait_for_nodes()
        return node

    def wait_for_nodes(self, timeout_s: float = 900, *, restarts: int = 6) -> None:
        """Until the head reports every node of this rig alive. A node whose ``ray start``
        gave up is started again (``restarts`` times): Ray waits a fixed 30 s for a new
        raylet to register, which a saturated machine can miss."""
        want = sorted(n["ip"] for n in self.info["nodes"].values())
        logs = ", ".join(n["log"] for n in self.info["nodes"].values())
        left = {name: restarts for name in self.info["nodes"]}

        def ready() -> bool:
            alive = ray_nodes.alive_ips(self.info["dashboard"])
            for name, node in list(self.info["nodes"].items()):
                # `ray start` sometimes lingers after its raylet gave up: a node not alive
                # after _JOIN_S is started again too.
                age = time.time() - node["started"]
                stuck = node["ip"] not in alive and (
                    age > _JOIN_S or (age > 40 and not ray_nodes.raylet_running(self.node(name))))
                if stuck or not group_alive(node["pgid"]):
                    if not left[name]:
                        raise RuntimeError(f"Ray node {name} did not join; its log: "
                                           f"{node['log']}")
                    left[name] -= 1
                    ray_nodes.kill_node(self.node(name))
                    self._node(name, node["ip"], head=name == "head",
                               num_cpus=self.info.get("node_cpus", {}).get(
                                   name, 0 if name == "head" else 1))
            return set(want) <= set(alive)  # a killed node stays "alive" a while

        wait_for(ready, timeout_s=timeout_s, what=f"Ray nodes {want} (logs: {logs})")
        for name in self.info["nodes"]:
            ray_nodes.settle(self.node(name))

    def node(self, name: str) -> ray_nodes.Node:
        return ray_nodes.Node(**self.info["nodes"][name])

    def kill_node(self, name: str) -> None:
        """The node's host dies: every process of it, at once (SIGKILL)."""
        ray_nodes.kill_node(self.node(name))
        del self.info["nodes"][name]
        self._save()

    def kill_cluster(self) -> None:
        """The head's host dies (GCS, dashboard, job drivers, Ray Train's controller), and the
        worker nodes go with it: a real worker's raylet exits on its own once it has lost the
        GCS for ``RAY_gcs_rpc_server_reconnect_timeout_s`` (60 s by default); here they are
        killed at once, so nothing of the old cluster runs beside the new one."""
        self.kill_node("head")
        for name in [n for n in self.info["nodes"] if n != "head"]:
            self.kill_node(name)

    def start_cluster(self, *, workers: int = 1, cpus: int = 1) -> None:
        """A fresh Ray cluster after `kill_cluster`: a new head at the address clients know (as
        a Kubernetes head Service keeps its name) and ``workers`` new worker nodes of ``cpus``
        CPUs each, with empty homes; the same S3 and tracking server."""
        head = self._node("head", HEAD_IP, num_cpus=0, head=True)
        wait_port(HEAD_IP, int(self.info["gcs"].rsplit(":", 1)[1]), timeout_s=180,
                  what="Ray head (GCS)", log=Path(head.log))
        self.wait_for_nodes()
        for _ in range(workers):
            self.add_node(cpus=cpus)

    def s3_down(self) -> None:
        os.kill(self.info["s3"]["pgid"], s3_server.GO_DOWN)

    def s3_up(self) -> None:
        os.kill(self.info["s3"]["pgid"], s3_server.COME_BACK)

    def tracking_server(self) -> tracking.TrackingServer:
        return tracking.load(Path(self.info["tracking"]))

    def client_env(self) -> dict[str, str]:
        """What a client (a laptop) sets: the addresses, its S3 keys and tracking login."""
        return {"RAY_ADDRESS": self.info["dashboard"], **self.cluster_env()}

    def exports(self) -> list[str]:
        """Shell lines for the client; secrets are read from their files when evaluated."""
        sec = self.state / "secrets"
        ts = self.tracking_server()
        return [f"export RAY_ADDRESS={self.info['dashboard']}",
                *tracking.exports(ts),
                f"export AWS_ENDPOINT_URL={self.info['s3']['endpoint']}",
                f'export AWS_ACCESS_KEY_ID="$(cat {sec / "s3_access_key"})"',
                f'export AWS_SECRET_ACCESS_KEY="$(cat {sec / "s3_secret_key"})"',
                "export AWS_DEFAULT_REGION=us-east-1",
                f"export HYPERNYM_STORAGE={STORAGE}"]

    def status(self) -> dict:
        return {"dashboard": self.info["dashboard"], "tracking": self.info.get("tracking_uri"),
                "s3": self.info["s3"]["endpoint"],
                "s3_running": bool(self.info["s3"]["pgid"]) and group_alive(
                    self.info["s3"]["pgid"]),
                "nodes": {name: {"ip": n["ip"], "running": group_alive(n["pgid"]),
                                 "log": n["log"]} for name, n in self.info["nodes"].items()},
                "alive_in_ray": ray_nodes.alive_ips(self.info["dashboard"]),
                "timings_s": self.info["timings_s"]}

    def down(self) -> None:
        """Stop what this rig started (by its recorded ids): nodes, tracking, S3."""
        for name in list(self.info["nodes"]):
            ray_nodes.kill_node(self.node(name), graceful=False)
            del self.info["nodes"][name]
        tracking.down(Path(self.info["tracking"]))
        if self.info["s3"]["pgid"]:
            stop_group(self.info["s3"]["pgid"])
            self.info["s3"]["pgid"] = None
        self._save()

    def process_groups(self) -> list[int]:
        """Every process group this rig runs now or ran as a node: nodes (killed ones too),
        S3, PostgreSQL and the tracking server."""
        groups = [n["pgid"] for n in self.info.get("started", [])]
        groups += [self.info["s3"]["pgid"]] if self.info["s3"]["pgid"] else []
        for pidfile in Path(self.info["tracking"]).glob("*/pid"):
            groups.append(int(pidfile.read_text()))
        return groups

    def leftovers(self, groups: list[int]) -> list[int]:
        """Processes still running in ``groups`` (from `process_groups`, taken before `down`)
        or in the mount namespace of any node this rig started."""
        pids = {pid for g in groups for pid in group_members(g)}
        for n in self.info.get("started", []):
            pids.update(ray_nodes.namespace_pids(ray_nodes.Node(
                name="", ip="", pgid=n["pgid"], log="", mnt_ns=n["mnt_ns"])))
        return sorted(pids)

    def _save(self) -> None:  # whole or not at all: another thread or process may read it
        tmp = self.state / "stack.json.tmp"
        tmp.write_text(json.dumps(self.info, indent=2))
        tmp.replace(self.state / "stack.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/local_stack.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env", "add-node",
                                            "kill-node", "kill-cluster", "start-cluster"])
    parser.add_argument("name", nargs="?", help="kill-node: the node's name (see status)")
    parser.add_argument("--state", default=os.environ.get("HYPERNYM_STACK_STATE",
                                                          "/tmp/hypernym-stack"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hide", action="append", default=[],
                        help="another path the nodes must not see (repeatable)")
    args = parser.parse_args(argv)
    state = Path(args.state)
    if args.command == "up":
        if (state / "stack.json").exists():
            parser.error(f"a rig is recorded in {state}: `down` it first")
        problem = ray_nodes.unshare_problem()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        hide = [Path(p).resolve() for p in args.hide]
        home = os.environ.get("HYPERNYM_HOME")
        hide.append(Path(home).resolve() if home else Path.cwd() / ".hypernym")
        stack = Stack.up(state, workers=args.workers, hide=hide)
        print("\n".join(stack.exports()))
        print(f"# up in {stack.info['timings_s']['up']} s {stack.info['timings_s']}; "
              f"status / down: {sys.argv[0]} status|down", file=sys.stderr)
        return 0
    if not (state / "stack.json").exists():
        print(f"no rig recorded in {state}", file=sys.stderr)
        return 1
    stack = Stack(state)
    if args.command == "down":
        stack.down()
        (state / "stack.json").unlink()
    elif args.command == "status":
        print(json.dumps(stack.status(), indent=2))
    elif args.command == "env":
        print("\n".join(stack.exports()))
    elif args.command == "add-node":
        print(stack.add_node().name)
    elif args.command == "kill-cluster":
        stack.kill_cluster()
    elif args.command == "start-cluster":
        stack.start_cluster(workers=args.workers)
    elif args.command == "kill-node":
        if args.name not in stack.info["nodes"]:
            parser.error(f"kill-node NAME, one of {sorted(stack.info['nodes'])}")
        stack.kill_node(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
