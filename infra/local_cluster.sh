#!/usr/bin/env bash
# A local Ray head with the Jobs API on 127.0.0.1:8265, for `hypernym submit` and the examples.
#   infra/local_cluster.sh start|stop|status
# Binds to 127.0.0.1 (Ray otherwise binds the routable IP) and, being loopback-only, runs with
# token auth disabled; for a shared cluster keep Ray's default (RAY_AUTH_MODE=token).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RAY=${RAY:-$ROOT/.venv/bin/ray}
[ -x "$RAY" ] && export PATH="$(dirname "$RAY"):$PATH" || RAY=ray  # jobs run this python
PORT=${RAY_PORT:-6380}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
case "${1:-status}" in
  start)
    "$RAY" start --head --node-ip-address 127.0.0.1 --port "$PORT" \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" --include-dashboard true \
      --disable-usage-stats
    echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT   # for hypernym submit / jobs"
    ;;
  stop) "$RAY" stop ;;
  status) "$RAY" status --address "127.0.0.1:$PORT" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
