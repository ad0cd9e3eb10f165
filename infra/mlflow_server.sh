#!/usr/bin/env bash
# A shared MLflow tracking + registry server with a database backend (the registry needs one)
# and proxied artifacts. Usage: infra/mlflow_server.sh [PORT] [STATE_DIR]
#   For a team, point --backend-store-uri at PostgreSQL and --artifacts-destination at s3://.
set -euo pipefail
PORT=${1:-5000}
STATE=${2:-${HYPERNYM_HOME:-$PWD/.hypernym}/mlflow-server}
mkdir -p "$STATE"
exec mlflow server \
  --host 127.0.0.1 --port "$PORT" \
  --backend-store-uri "sqlite:///$STATE/mlflow.db" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$STATE/artifacts}"
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
