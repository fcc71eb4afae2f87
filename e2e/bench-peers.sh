#!/usr/bin/env bash
# `make bench-peers`: Rampart and Kyverno making the same NetworkPolicies and PDBs over the
# same estate, at N=100 and N=1000 (BENCH_PEERS_NS="100 1000"), on the local control plane
# (never part of `make test`). Builds Kyverno into the cache first (e2e/tools/build-peers.sh;
# slow the first time), installs its CRDs and what it expects to find (e2e/peers/), then runs
# the bench binary with BENCH_PEERS=1 once per N. Settings as for e2e/bench.sh, plus
# BENCH_PEERS_NS and BENCH_PEERS_RUNS (default 3: the table gives medians).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
peers=$(bash e2e/tools/build-peers.sh)
export BENCH_PEERS_DIR="$peers"
use_or_start_plane
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl apply --server-side --force-conflicts -f "$peers/crds/" >/dev/null
kubectl wait --for=condition=Established crd/hardeningprofiles.rampart.dev crd/clusterpolicies.kyverno.io crd/updaterequests.kyverno.io --timeout=60s >/dev/null
kubectl apply --server-side --force-conflicts -f e2e/peers/kyverno-setup.yaml >/dev/null
echo "[bench-peers] building the operator (release)"
cargo build --release --quiet -p rampart
# Release: shares the operator build's dependencies, and the client side of a bench should not
# be the slow part.
cargo build --release --quiet -p rampart-e2e --bin bench
echo "[bench-peers] machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in ${BENCH_PEERS_NS:-100 1000}; do
  runs=${BENCH_PEERS_RUNS:-3}
  BENCH_PEERS=1 BENCH_N="$n" BENCH_RUNS="$runs" BENCH_IDLE_SECS="${BENCH_IDLE_SECS:-60}" ./target/release/bench
done
