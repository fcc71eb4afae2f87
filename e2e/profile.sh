#!/usr/bin/env bash
# Memory profile of one convergence over a kept bench estate (see BENCHMARKS.md).
#
#   BENCH_N=1000 BENCH_RUNS=0 BENCH_ESTATE=big BENCH_KEEP=1 bash e2e/bench.sh   # once: the estate
#   bash e2e/profile.sh                  # peak/idle RSS, CPU, reconciles and writes of one run
#   PROFILE_HEAPTRACK=1 bash e2e/profile.sh   # the same under heaptrack (system allocator build)
#
# Settings: PROFILE_ESTATE (default big), PROFILE_IDLE_SECS (default 30), PROFILE_BIN (the
# operator binary; default target/release/rampart, or a --no-default-features build with
# debug info under target/profile when PROFILE_HEAPTRACK=1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
estate=${PROFILE_ESTATE:-big}
idle=${PROFILE_IDLE_SECS:-30}
tag="profile-$(date +%s)"
out="$root/target/profile"
mkdir -p "$out"
if [ "${PROFILE_HEAPTRACK:-0}" = 1 ]; then
  command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 1; }
  # jemalloc hides allocations from heaptrack: profile a system-allocator build with symbols.
  CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --quiet --no-default-features -p rampart --target-dir "$out/build"
  bin=${PROFILE_BIN:-$out/build/release/rampart}
  wrap=(heaptrack -o "$out/$tag")
else
  cargo build --release --quiet -p rampart
  bin=${PROFILE_BIN:-$root/target/release/rampart}
  wrap=()
fi
port=$(free_port)
"${wrap[@]}" "$bin" run --metrics-addr "127.0.0.1:$port" --profile-selector "profile.rampart.dev/run=$tag" >"$out/$tag.log" 2>&1 &
sleep 3
pid=$(pgrep -f -- "--profile-selector profile.rampart.dev/run=$tag" | while read -r p; do
  [ "$(cat /proc/"$p"/comm)" = rampart ] && echo "$p"; done | head -1)
[ -n "$pid" ] || { echo "the operator did not start; see $out/$tag.log" >&2; exit 1; }
mem() { grep -E 'VmHWM|VmRSS' /proc/"$pid"/status | awk '{printf "%s %.1f MiB  ", $1, $2/1024}'; echo; }
cpu() { awk '{printf "%.2f", ($14+$15)/100}' /proc/"$pid"/stat; }
metric() { curl -s "127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
echo "caches filled:    $(mem)"
kubectl apply -f - >/dev/null <<YAML
apiVersion: rampart.dev/v1alpha1
kind: HardeningProfile
metadata: {name: $tag, labels: {profile.rampart.dev/run: $tag}}
spec:
  mode: Enforce
  namespaceSelector: {matchLabels: {bench.rampart.dev/estate: $estate}}
  networkPolicies: {allowedNamespaces: [observability, kafka], monitoring: {namespace: observability, ports: [9090, 9187]}}
  podDisruptionBudgets: {minReplicas: 2, maxUnavailable: 1}
  secretRotation: {rotationId: bench-0, selector: {matchLabels: {rampart.dev/rotate: "true"}}, regenerate: [{key: password}], maxConcurrentRestarts: 10, rolloutTimeoutSeconds: 600}
  backups: {schedule: "0 0 1 1 *", pvcSelector: {matchLabels: {backup: "true"}}, volumeSnapshotClassName: csi-snapclass, retention: {maxCount: 3}, snapshotOnCreate: true, startingDeadlineSeconds: 30}
YAML
start=$(date +%s.%N)
kubectl wait --for=condition=Ready "hardeningprofile/$tag" --timeout=900s >/dev/null
echo "Ready after $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s; $(mem)CPU $(cpu) s"
sleep "$idle"
echo "after ${idle}s idle:  $(mem)CPU $(cpu) s; reconciles $(metric rampart_reconciles_total); writes $(metric rampart_api_writes_total)"
kubectl delete hardeningprofile "$tag" --wait=true >/dev/null
echo "profile deleted:  $(mem)"
kill -TERM "$pid"
wait || true
kubectl delete volumesnapshots -A -l "rampart.dev/profile=$tag" --wait=false >/dev/null 2>&1 || true
[ "${PROFILE_HEAPTRACK:-0}" = 1 ] && echo "heaptrack data: $(ls "$out/$tag".*zst 2>/dev/null) (heaptrack_print -f FILE)"
echo "log: $out/$tag.log"
