#!/usr/bin/env bash
# A local Ray head with the Jobs API on 127.0.0.1:8265, for `hypernym submit` and the examples.
#   infra/local_cluster.sh start|stop|status
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

running() { [ -f "$PGID_FILE" ] && kill -0 -- "-$(cat "$PGID_FILE")" 2>/dev/null; }

case "${1:-status}" in
  start)
    if running; then echo "already running (process group $(cat "$PGID_FILE"))"; exit 0; fi
    if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]; then
      "$RAY" get-auth-token --generate >/dev/null  # ~/.ray/auth_token, kept if it exists
    fi
    mkdir -p "$TEMP"
    # setsid: the head and everything it spawns share one new process group, stopped as one.
    setsid "$RAY" start --head --node-ip-address 127.0.0.1 --port "$PORT" \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" --include-dashboard true \
      --temp-dir "$TEMP" --disable-usage-stats &
    starter=$!
    echo "$starter" > "$PGID_FILE"  # setsid keeps the pid: the group id is the starter's pid
    wait "$starter"
    echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT   # for hypernym submit / jobs"
    [ "$RAY_AUTH_MODE" = token ] && echo "export RAY_AUTH_MODE=token   # clients send the token"
    echo "stop it with: $0 stop"
    ;;
  stop)
    if ! running; then echo "no head started by this script on port $PORT"; exit 0; fi
    pgid=$(cat "$PGID_FILE")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 20); do running || break; sleep 0.5; done
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
