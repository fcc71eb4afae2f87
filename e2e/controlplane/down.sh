#!/usr/bin/env bash
# Stops everything `up.sh` (and `make demo`) started, and removes the etcd data. Safe to run
# when nothing is running. RAMPART_PLANE_DIR names a second plane's state, as for up.sh.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
L="${RAMPART_PLANE_DIR:-$root/.local}"
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
# Any control-plane process still pointing at our state directory (a crashed start, a lost
# pid file). Matched by program name too, so a shell or `rm` that mentions the path survives.
for pid in $(pgrep -f -- "$L/" 2>/dev/null); do
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    etcd|kube-apiserver|kube-controller|kube-scheduler|kwok|rampart-csi-hos|csi-provisioner|csi-snapshotter|snapshot-contro)
      kill -KILL "$pid" 2>/dev/null && stopped+=("stray($pid)") ;;
  esac
done
# The CSI volumes and snapshots belong to objects that lived in that etcd data.
csi_socket=$(sed -n 's/^CSI_SOCKET=//p' "$L/env" 2>/dev/null)
case "$csi_socket" in /tmp/rampart-csi-*.sock) rm -f "$csi_socket" ;; esac
rm -rf "$L/etcd" "$L/env" "$L/operator-port" "$L/csi"
if [ ${#stopped[@]} -gt 0 ]; then
  echo "[down] stopped: ${stopped[*]}"
else
  echo "[down] nothing was running"
fi
