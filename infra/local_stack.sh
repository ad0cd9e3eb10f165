#!/usr/bin/env bash
# The local multi-host rig (Ray head + worker nodes in their own mount namespaces, moto S3,
# MLflow tracking server with PostgreSQL and basic auth): see infra/stack/local_stack.py and
# docs/cluster.md ("The local multi-host rig"). Needs root (unshare --mount) and Linux.
#   eval "$(infra/local_stack.sh up)"      # starts it, prints the client's exports
#   infra/local_stack.sh status | env | add-node | kill-node NAME | down
#   infra/local_stack.sh kill-cluster; infra/local_stack.sh start-cluster   # lose the head
# State (ids, logs, secrets): --state DIR or HYPERNYM_STACK_STATE (default /tmp/hypernym-stack).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m infra.stack.local_stack "$@"
