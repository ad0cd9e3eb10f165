"""An MLflow tracking server with its production parts, on this machine:

- PostgreSQL for runs, the model registry and the basic-auth users (the server binaries come
  from the ``pgserver`` wheel, so a pip install is enough); password auth (scram-sha-256), TCP
  on 127.0.0.1 only, no Unix socket; the password sits in a 0600 pgpass file;
- ``mlflow server --app-name basic-auth``: the admin password comes from the environment
  (``MLFLOW_AUTH_ADMIN_PASSWORD``; generated into ``<state>/secrets`` when unset), never argv;
- artifacts proxied to ``--artifacts-destination`` (``s3://...``; the endpoint and keys come
  from the ``AWS_*`` environment), so clients and Ray workers need no S3 keys for artifacts.

State lives in one folder: ``postgres/`` (data, log, pid), ``mlflow/`` (auth.ini, log, pid),
``secrets/`` (0700), ``tracking.json``. Usage: ``infra/tracking_server.sh up|down|status``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.stack.procs import (
    autogroup_nice,
    free_port,
    group_alive,
    spawn,
    stop_group,
    wait_for,
    wait_port,
)

__all__ = ["TrackingServer", "down", "load", "main", "start_server", "stop_server", "up"]

ADMIN = "admin"
_DB_USER = "mlflow"
_DATABASES = ("mlflow", "mlflow_auth")
_START_NICE = -10


@dataclass
class TrackingServer:
    state: str
    host: str
    port: int
    pg_port: int
    artifacts_destination: str
    workers: int = 1
    durable: bool = True  # False (the throwaway test rig): no fsync in PostgreSQL

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def dir(self) -> Path:
        return Path(self.state)

    def password_file(self) -> Path:
        return self.dir / "secrets" / "admin_password"

    def db_uri(self, database: str) -> str:  # no password: libpq reads it from PGPASSFILE
        return f"postgresql+psycopg2://{_DB_USER}@127.0.0.1:{self.pg_port}/{database}"


def _secret(path: Path, value: str | None = None) -> str:
    """Read the secret in ``path``, or write ``value`` (or a new random one) there, 0600."""
    if path.exists() and value is None:
        return path.read_text().strip()
    value = value or secrets.token_urlsafe(24)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def _pg_bin(name: str) -> str:
    from importlib.util import find_spec

    # Located, not imported: importing pgserver takes a lock file and sets up its own servers.
    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tracking server needs the PostgreSQL binaries of the pgserver "
                           "wheel: pip install 'pgserver>=0.1.4'")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root. As root, a user namespace maps us to an unprivileged id
    # (files stay owned by root outside); no system user is created, no permissions changed.
    return ["unshare", "--user", "--map-user=65534", "--map-group=65534", "--"] \
        if os.geteuid() == 0 else []


def _start_postgres(ts: TrackingServer, env: dict[str, str]) -> None:
    pg = ts.dir / "postgres"
    pg.mkdir(parents=True, exist_ok=True)
    data = pg / "data"
    password = _secret(ts.dir / "secrets" / "db_password")
    if not (data / "PG_VERSION").exists():
        out = subprocess.run(
            [*_as_postgres_user(), _pg_bin("initdb"), "-D", str(data), "-U", _DB_USER,
             "--auth=scram-sha-256", f"--pwfile={ts.dir / 'secrets' / 'db_password'}",
             "-E", "utf8", *([] if ts.durable else ["--no-sync"])],
            capture_output=True, text=True, env=env)
        if out.returncode:
            raise RuntimeError(f"initdb failed:\n{out.stdout}\n{out.stderr}")
    proc = spawn([*_as_postgres_user(), _pg_bin("postgres"), "-D", str(data), "-h", "127.0.0.1",
                  "-p", str(ts.pg_port), "-k", "",
                  *([] if ts.durable else ["-c", "fsync=off", "-c", "synchronous_commit=off"])],
                 env=env, log=pg / "postgres.log", pidfile=pg / "pid")
    wait_port("127.0.0.1", ts.pg_port, timeout_s=60, what="PostgreSQL",
              alive=lambda: proc.poll() is None, log=pg / "postgres.log")
    _secret(ts.dir / "secrets" / "pgpass", f"127.0.0.1:{ts.pg_port}:*:{_DB_USER}:{password}\n")
    import psycopg2

    # The server accepts connections a moment before it accepts logins.
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=ts.pg_port, user=_DB_USER,
                                    password=password, dbname="postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in _DATABASES:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()


def _server_env(ts: TrackingServer, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        PGPASSFILE=str(ts.dir / "secrets" / "pgpass"),
        MLFLOW_AUTH_CONFIG_PATH=str(ts.dir / "mlflow" / "auth.ini"),
        MLFLOW_AUTH_ADMIN_USERNAME=ADMIN,
        MLFLOW_AUTH_ADMIN_PASSWORD=_secret(ts.password_file()),
        MLFLOW_FLASK_SERVER_SECRET_KEY=_secret(ts.dir / "secrets" / "flask_secret_key"),
        PATH=f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}",
        # MLflow 3's server otherwise starts a job runner with seven huey consumers: processes
        # (and start-up time) a tracking server for training runs does not use.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    return env


def start_server(ts: TrackingServer, env: dict[str, str] | None = None) -> None:
    """Start ``mlflow server`` (PostgreSQL must be up); returns once it answers, with auth."""
    import requests

    base = dict(os.environ if env is None else env)
    (ts.dir / "mlflow").mkdir(parents=True, exist_ok=True)
    (ts.dir / "mlflow" / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {ts.db_uri('mlflow_auth')}\nadmin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request's password check is a PBKDF2 hash (about a second of CPU on a busy
        # machine); cache good logins for a while, as MLflow's config suggests for busy servers.
        "auth_cache_ttl_seconds = 300\n")
    log = ts.dir / "mlflow" / "server.log"
    proc = spawn(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
         "--host", ts.host, "--port", str(ts.port), "--workers", str(ts.workers),
         "--backend-store-uri", ts.db_uri("mlflow"),
         "--artifacts-destination", ts.artifacts_destination,
         "--allowed-hosts", f"{ts.host},{ts.host}:{ts.port},localhost:{ts.port}"],
        env=_server_env(ts, base), log=log, pidfile=ts.dir / "mlflow" / "pid")
    # Its start (imports, schema checks) at a raised priority on a busy machine, as root.
    autogroup_nice(proc.pid, _START_NICE if os.geteuid() == 0 else 0)

    def answers() -> bool:
        try:  # an authenticated call: the auth store, the admin user and the database answer
            return requests.get(f"{ts.uri}/api/2.0/mlflow/experiments/search",
                                params={"max_results": 1},
                                auth=(ADMIN, _secret(ts.password_file())), timeout=60).ok
        except requests.RequestException:
            return False

    # Importing the server takes ~10 s on a quiet machine, minutes on a saturated one.
    wait_for(answers, timeout_s=300, what="mlflow server", alive=lambda: proc.poll() is None,
             log=log)
    autogroup_nice(proc.pid, 0)


def stop_server(ts: TrackingServer) -> None:
    """Stop the mlflow server only (PostgreSQL and its data stay): an outage, or the end."""
    pidfile = ts.dir / "mlflow" / "pid"
    if pidfile.exists():
        stop_group(int(pidfile.read_text()))
        pidfile.unlink()


def up(state: Path, *, artifacts_destination: str, host: str = "127.0.0.1", port: int = 0,
       env: dict[str, str] | None = None, workers: int = 1,
       durable: bool = True) -> TrackingServer:
    """PostgreSQL, then the mlflow server; state in ``state`` (reused on a second ``up``)."""
    state = Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    ts = TrackingServer(state=str(state), host=host, port=port or free_port(host),
                        pg_port=free_port(), artifacts_destination=artifacts_destination,
                        workers=workers, durable=durable)
    # Given or generated, kept (0600) for restarts and clients, before anyone reads it.
    given = env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    if given or not ts.password_file().exists():
        _secret(ts.password_file(), given or secrets.token_urlsafe(24))
    (state / "tracking.json.tmp").write_text(json.dumps(asdict(ts), indent=2))
    (state / "tracking.json.tmp").replace(state / "tracking.json")
    try:
        _start_postgres(ts, env)
        start_server(ts, env)
    except BaseException:
        down(state)  # nothing half-started stays behind
        raise
    return ts


def load(state: Path) -> TrackingServer | None:
    path = Path(state) / "tracking.json"
    return TrackingServer(**json.loads(path.read_text())) if path.exists() else None


def down(state: Path) -> None:
    """Stop the server, then PostgreSQL (fast shutdown: SIGINT to the postmaster)."""
    ts = load(state)
    if ts is None:
        return
    stop_server(ts)
    pidfile = ts.dir / "postgres" / "pid"
    if pidfile.exists():
        stop_group(int(pidfile.read_text()), first=signal.SIGINT, grace_s=15)
        pidfile.unlink()


def exports(ts: TrackingServer) -> list[str]:
    """Shell lines for a client; the password is read from its file, not printed."""
    return [f"export MLFLOW_TRACKING_URI={ts.uri}",
            f"export MLFLOW_TRACKING_USERNAME={ADMIN}",
            f'export MLFLOW_TRACKING_PASSWORD="$(cat {ts.password_file()})"']


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/tracking_server.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state", default=os.environ.get("HYPERNYM_TRACKING_STATE",
                                                          "/tmp/hypernym-tracking"))
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (127.0.0.x)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn workers (several need spare cores to start)")
    parser.add_argument("--artifacts-destination",
                        default=os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"),
                        help="s3://bucket/prefix (endpoint and keys from AWS_*)")
    args = parser.parse_args(argv)
    state = Path(args.state)
    if args.command == "up":
        if not args.artifacts_destination:
            parser.error("--artifacts-destination s3://... (or MLFLOW_ARTIFACTS_DESTINATION)")
        if not args.host.startswith("127."):
            parser.error("--host must be a loopback address (127.0.0.x)")
        ts = up(state, artifacts_destination=args.artifacts_destination, host=args.host,
                port=args.port, workers=args.workers)
        print("\n".join(exports(ts)))
        print(f"# logs: {ts.dir / 'mlflow' / 'server.log'}, {ts.dir / 'postgres' / 'postgres.log'}",
              file=sys.stderr)
    elif args.command == "down":
        down(state)
    else:
        ts = load(state)
        running = {name: group_alive(int((state / name / "pid").read_text()))
                   for name in ("postgres", "mlflow") if (state / name / "pid").exists()}
        print(json.dumps({"server": ts and ts.uri, "running": running}))
        return 0 if running and all(running.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
