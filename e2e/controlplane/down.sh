#!/usr/bin/env bash
# Stops everything `up.sh` (and `make demo`) started, and removes the etcd data. Safe to run
# when nothing is running.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
L="$root/.local"
stopped=()
if [ -d "$L/pids" ]; then
  for f in "$L"/pids/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid); pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
      stopped+=("$name($pid)")
    fi
    rm -f "$f"
  done
fi
# Anything else still holding our state directory (a crashed start, a lost pid file).
if pgrep -f -- "$L/" >/dev/null 2>&1; then
  pkill -KILL -f -- "$L/" 2>/dev/null || true
  stopped+=("strays")
fi
rm -rf "$L/etcd" "$L/env" "$L/operator-port"
if [ ${#stopped[@]} -gt 0 ]; then
  echo "[down] stopped: ${stopped[*]}"
else
  echo "[down] nothing was running"
fi
