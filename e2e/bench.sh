#!/usr/bin/env bash
# `make bench`: the scale benchmark on the local control plane (never part of `make test`).
# Starts the plane if none runs (and stops it afterwards), builds the operator in release
# mode, and runs e2e/src/bin/bench/ (main.rs lists the settings: BENCH_N, BENCH_RUNS,
# BENCH_IDLE_SECS, BENCH_CHURN, BENCH_ROTATION, BENCH_OUT, ...). Afterwards
# e2e/tools/bench-plot.py redraws docs/bench-scaling.png from the JSON of every N run so far
# (when matplotlib is installed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$(bash e2e/tools/build.sh --print):$PATH"
export KUBECONFIG="$root/.local/kubeconfig"
export BENCH_N="${BENCH_N:-${N:-100}}"
started=0
cleanup() { local rc=$?; [ "$started" = 1 ] && bash e2e/controlplane/down.sh; exit $rc; }
trap cleanup EXIT INT TERM
if ! { [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1; }; then
  started=1
  bash e2e/controlplane/up.sh
fi
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/hardeningprofiles.rampart.dev --timeout=60s >/dev/null
echo "[bench] building the operator (release)"
cargo build --release --quiet -p rampart
# Release: shares the operator build's dependencies, and the client side of a bench should not
# be the slow part.
cargo build --release --quiet -p rampart-e2e --bin bench
echo "[bench] machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(kubectl version -o json | python3 -c 'import json,sys; print("kubernetes", json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
echo "[bench] load before: $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/bench
python3 e2e/tools/bench-plot.py || true
