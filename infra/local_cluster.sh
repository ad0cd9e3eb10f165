#!/usr/bin/env bash
# A local Ray head with the Jobs API on 127.0.0.1:8265, for `hypernym submit` and the examples.
#   infra/local_cluster.sh start [EXTRA `ray start` ARGS] | stop | status
# Ports: RAY_PORT (GCS, 6380), RAY_DASHBOARD_PORT (8265), RAY_TEMP_DIR; e.g. a second head on one
# machine also needs free agent ports: start --dashboard-agent-listen-port 52400 ...
# Binds to 127.0.0.1 (Ray otherwise binds the routable IP). Being loopback-only it runs with token
# auth disabled unless RAY_AUTH_MODE=token is set (then the token is ~/.ray/auth_token, made if
# missing, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH).
# The head runs in its own process group, recorded under its temp dir: `stop` ends that group
# only, never other Ray instances on the machine (a plain `ray stop` would end them all).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RAY=${RAY:-$ROOT/.venv/bin/ray}
if [ -x "$RAY" ]; then export PATH="$(dirname "$RAY"):$PATH"; else RAY=ray; fi  # jobs run this python
PORT=${RAY_PORT:-6380}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
TEMP=${RAY_TEMP_DIR:-/tmp/hypernym-ray-$PORT}  # short: Ray's socket paths are limited to 107 bytes
PGID_FILE=$TEMP/head.pgid
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}

# A live (not zombie: those wait for init to reap them) process in the recorded group.
running() {
  [ -f "$PGID_FILE" ] &&
    ps -eo pgid=,stat= | awk -v g="$(cat "$PGID_FILE")" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'
}

cmd=${1:-status}
shift || true
case "$cmd" in
  start)
    if running; then echo "already running (process group $(cat "$PGID_FILE"))"; exit 0; fi
    if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]; then
      "$RAY" get-auth-token --generate >/dev/null  # ~/.ray/auth_token, kept if it exists
    fi
    mkdir -p "$TEMP"
    # setsid: the head and everything it spawns share one new process group, stopped as one.
    setsid "$RAY" start --head --node-ip-address 127.0.0.1 --port "$PORT" \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" --include-dashboard true \
      --temp-dir "$TEMP" --disable-usage-stats "$@" &
    starter=$!
    echo "$starter" > "$PGID_FILE"  # setsid keeps the pid: the group id is the starter's pid
    wait "$starter" || { rc=$?; rm -f "$PGID_FILE"; exit "$rc"; }
    echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT   # for hypernym submit / jobs"
    [ "$RAY_AUTH_MODE" = token ] && echo "export RAY_AUTH_MODE=token   # clients send the token"
    echo "stop it with: $0 stop"
    ;;
  stop)
    if ! running; then echo "no head started by this script on port $PORT"; exit 0; fi
    pgid=$(cat "$PGID_FILE")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    # gcs_server, raylet and the runtime-env agent outlast SIGTERM sent to the whole group; a
    # local head keeps nothing worth a longer wait (its jobs end with it either way).
    for _ in $(seq 6); do running || break; sleep 0.5; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    rm -f "$PGID_FILE"
    echo "stopped (process group $pgid)"
    ;;
  status)
    running || { echo "not running"; exit 1; }
    "$RAY" status --address "127.0.0.1:$PORT"
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
