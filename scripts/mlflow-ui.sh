#!/usr/bin/env bash
# Serve the MLflow UI over the project's tracking store, on 127.0.0.1 only.
#
# Usage: scripts/mlflow-ui.sh [PORT]          (default port 5151)
#
# Store: $MLFLOW_TRACKING_URI when it is a sqlite:/// URI, else sqlite:///<repo>/mlruns/mlflow.db (the store the
# stages log to; an absolute path so jobs in any working directory share it, stack-facts §5).
# Artifacts: $MLFLOW_ARTIFACT_ROOT, else an `artifacts/` folder next to the database (<repo>/mlruns/artifacts), the
# root for experiments created through the UI; the stages' experiments keep store-relative `jarvis-store:` locations,
# so a copied store (database + artifacts/) serves its artifacts from wherever it now lives.
#
# The server binds 127.0.0.1 (MLflow's host-header middleware expects localhost, stack-facts §5); reach it from
# another machine through an SSH tunnel, as printed below. It runs in the foreground (exec): Ctrl-C stops it, and
# killing this process (or its process group) stops the uvicorn worker and the job-runner child with it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PORT="${1:-5151}"

die() { echo "mlflow-ui: ERROR: $*" >&2; exit 1; }

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PORT must be an integer in 1..65535, got '$PORT'"

if [[ -x $REPO/.venv/bin/mlflow ]]; then
    MLFLOW="$REPO/.venv/bin/mlflow"
elif command -v mlflow >/dev/null; then
    MLFLOW=$(command -v mlflow)
else
    die "mlflow not found: neither $REPO/.venv/bin/mlflow nor mlflow on PATH (run \`make setup\`)"
fi

uri="${MLFLOW_TRACKING_URI:-sqlite:///$REPO/mlruns/mlflow.db}"
case "$uri" in
    sqlite:///*) ;;
    *) die "MLFLOW_TRACKING_URI='$uri' is not a sqlite:/// URI; this script serves a local SQLite store (unset it to serve $REPO/mlruns/mlflow.db)" ;;
esac
# sqlite:////abs/x.db -> /abs/x.db ; sqlite:///rel/x.db -> rel/x.db (relative to the current directory).
db_path="${uri#sqlite:///}"
[[ -n $db_path ]] || die "MLFLOW_TRACKING_URI='$uri' names no database file"
db_dir=$(dirname -- "$db_path")
mkdir -p -- "$db_dir"
db_abs="$(cd -- "$db_dir" && pwd -P)/$(basename -- "$db_path")"
backend="sqlite:///$db_abs"
artifacts="${MLFLOW_ARTIFACT_ROOT:-$(dirname -- "$db_abs")/artifacts}"
mkdir -p -- "$artifacts"

if [[ ! -s $db_abs ]]; then
    echo "mlflow-ui: note: $db_abs does not exist yet; MLflow creates an empty store" >&2
fi

# The server resolves store-relative `jarvis-store:` artifact locations (src/jarvis/artifact_store.py) against the
# store it serves: it has no tracking URI of its own, so it reads this one.
export MLFLOW_TRACKING_URI="$backend"

# Offline machines: no anonymous usage reporting (harmless where the variables are not read).
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
export DO_NOT_TRACK="${DO_NOT_TRACK:-1}"

host=$(hostname -f 2>/dev/null || hostname)
cat <<EOF
MLflow UI for $backend
  artifacts: $artifacts
  URL:       http://127.0.0.1:$PORT   (starts in ~8 s; Ctrl-C to stop)

From your laptop, when this runs on a cluster login node ($host):
  ssh -N -L $PORT:127.0.0.1:$PORT ${USER:-$(id -un)}@$host
then open http://127.0.0.1:$PORT locally. On a shared login node pick a free port: scripts/mlflow-ui.sh <PORT>.
EOF

exec "$MLFLOW" server \
    --backend-store-uri "$backend" \
    --default-artifact-root "$artifacts" \
    --host 127.0.0.1 \
    --port "$PORT" \
    --workers 1
