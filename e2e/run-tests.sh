#!/usr/bin/env bash
# Runs the end-to-end suite on the local control plane: starts the plane if it is not running
# (and stops it afterwards), installs the CRD, runs the operator, runs the tests, and leaves
# no process behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$(bash e2e/tools/build.sh --print):$PATH"
export KUBECONFIG="$root/.local/kubeconfig"
mkdir -p .local/logs

started_plane=0
operator_pid=""
cleanup() {
  local rc=$?
  if [ -n "$operator_pid" ]; then kill "$operator_pid" 2>/dev/null || true; wait "$operator_pid" 2>/dev/null || true; fi
  if [ "$started_plane" = 1 ]; then bash e2e/controlplane/down.sh || true; fi
  exit $rc
}
trap cleanup EXIT INT TERM

if [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
  echo "[e2e] using the running control plane"
else
  started_plane=1
  bash e2e/controlplane/up.sh
fi

echo "[e2e] installing the HardeningProfile CRD"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/hardeningprofiles.rampart.dev --timeout=60s >/dev/null

cargo build --workspace --bins --tests --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/debug/rampart run --metrics-addr "127.0.0.1:$port" --profile-selector "!e2e.rampart.dev/dedicated" >.local/logs/operator-e2e.log 2>&1 &
operator_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { echo "[e2e] the operator exited; see .local/logs/operator-e2e.log"; tail -20 .local/logs/operator-e2e.log; exit 1; }
  sleep 0.1
done
echo "[e2e] operator running (pid $operator_pid, metrics on 127.0.0.1:$port, log .local/logs/operator-e2e.log)"

export RAMPART_METRICS_URL="http://127.0.0.1:$port/metrics"
cargo test -p rampart-e2e -- --test-threads=8
