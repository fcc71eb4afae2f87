#!/usr/bin/env bash
# `make bench`: the scale benchmark on the local control plane (never part of `make test`).
# Starts the plane if none runs (and stops it afterwards), builds the operator in release
# mode, and runs e2e/src/bin/bench/ (main.rs lists the settings: BENCH_N, BENCH_RUNS,
# BENCH_IDLE_SECS, BENCH_CHURN, BENCH_ROTATION, BENCH_OUT, ...). Afterwards
# e2e/tools/bench-plot.py redraws docs/bench-scaling.png from the JSON of every N run so far
# (when matplotlib is installed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export BENCH_N="${BENCH_N:-${N:-100}}"
use_or_start_plane
install_crd
echo "[bench] building the operator (release)"
cargo build --release --quiet -p rampart
# Release: shares the operator build's dependencies, and the client side of a bench should not
# be the slow part.
cargo build --release --quiet -p rampart-e2e --bin bench
echo "[bench] machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(kubectl version -o json | python3 -c 'import json,sys; print("kubernetes", json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
echo "[bench] load before: $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/bench
python3 e2e/tools/bench-plot.py || true
