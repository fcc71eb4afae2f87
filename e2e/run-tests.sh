#!/usr/bin/env bash
# Runs the end-to-end suite on the local control plane: starts the plane if it is not running
# (and stops it afterwards), installs the CRD, runs the operator, runs the tests, and leaves
# no process behind.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
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

if plane_running; then
  echo "[e2e] using the running control plane"
else
  started_plane=1
  bash e2e/controlplane/up.sh
fi

# `make demo` leaves its operator running, and it reconciles every profile, the tests' own
# included: stopped, or it would overwrite what the tests set up.
stop_demo_operator

echo "[e2e] installing the HardeningProfile CRD"
install_crd

cargo build --workspace --bins --tests --quiet
# The shared operator, and every operator a test starts with OperatorProcess::start*, act as
# rampart-system/rampart with exactly the RBAC and admission policy config/ ships, so every
# suite shows that they allow all Rampart does (RAMPART_E2E_IDENTITY=admin: as the admin).
operator_kubeconfig="$KUBECONFIG"
if [ "${RAMPART_E2E_IDENTITY:-serviceaccount}" = serviceaccount ]; then
  operator_kubeconfig=$(install_shipped_identity)
  export RAMPART_E2E_OPERATOR_KUBECONFIG="$operator_kubeconfig"
  export RAMPART_E2E_LEASE_NAMESPACE=rampart-system
  echo "[e2e] operators act as system:serviceaccount:rampart-system:rampart (config/rbac, config/admission)"
fi
port=$(free_port)
KUBECONFIG="$operator_kubeconfig" RAMPART_ALLOW_SUB_MINUTE_SCHEDULES=true ./target/debug/rampart run --metrics-addr "127.0.0.1:$port" --profile-selector "!e2e.rampart.dev/dedicated" >.local/logs/operator-e2e.log 2>&1 &
operator_pid=$!
wait_operator "$port" "$operator_pid" .local/logs/operator-e2e.log healthz 100
echo "[e2e] operator running (pid $operator_pid, metrics on 127.0.0.1:$port, log .local/logs/operator-e2e.log)"

export RAMPART_METRICS_URL="http://127.0.0.1:$port/metrics"
cargo test -p rampart-e2e --no-fail-fast -- --test-threads=8
