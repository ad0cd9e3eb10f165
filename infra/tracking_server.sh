#!/usr/bin/env bash
# An MLflow tracking server with PostgreSQL (the pgserver wheel's binaries), basic auth (admin
# password from MLFLOW_AUTH_ADMIN_PASSWORD, or generated into <state>/secrets) and artifacts
# proxied to S3 (endpoint and keys from AWS_*): see infra/stack/tracking.py.
#   eval "$(infra/tracking_server.sh up --artifacts-destination s3://bucket/mlflow)"
#   infra/tracking_server.sh status | down      [--state DIR] [--host 127.0.0.x] [--port N]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m infra.stack.tracking "$@"
