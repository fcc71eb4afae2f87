# Shared by the scripts under e2e/ (sourced, never run): where things are, and the few steps
# every one of them takes. After `source e2e/lib.sh` the working directory is the repository
# root, PATH has the control plane's binaries (the CSI stack's included) first and
# KUBECONFIG names the local plane's.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$(bash "$root/e2e/tools/build.sh" --print-path):$PATH"
export KUBECONFIG="$root/.local/kubeconfig"

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Whether the local control plane answers.
plane_running() {
  [ -f "$KUBECONFIG" ] && kubectl --request-timeout=3s get --raw /readyz >/dev/null 2>&1
}

# Installs (or updates) the HardeningProfile CRD and waits until it is served.
install_crd() {
  kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
  kubectl wait --for=condition=Established crd/hardeningprofiles.rampart.dev --timeout=60s >/dev/null
}

# The OpenReports release whose CRDs the reports suite installs.
OPENREPORTS_VERSION=v0.2.1

# install_openreports_crds [KUBECONFIG]: the OpenReports CRDs (openreports.io/v1alpha1 Report
# and ClusterReport) from the Go module github.com/openreports/reports-api, which ships them
# under config/crd/, fetched through the Go module proxy (cached after the first time) rather
# than copied into this repository; waits until they are served.
install_openreports_crds() {
  local kc=${1:-$KUBECONFIG} dir
  # Outside any Go module: the download needs none, and e2e/tools' modules must not change.
  dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "github.com/openreports/reports-api@$OPENREPORTS_VERSION" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  if [ ! -d "$dir/config/crd" ]; then
    echo "no config/crd in github.com/openreports/reports-api@$OPENREPORTS_VERSION (dir: '$dir')" >&2
    return 1
  fi
  KUBECONFIG="$kc" kubectl apply --server-side --force-conflicts -f "$dir/config/crd/" >/dev/null
  KUBECONFIG="$kc" kubectl wait --for=condition=Established crd/reports.openreports.io \
    crd/clusterreports.openreports.io --timeout=60s >/dev/null
}

# install_shipped_identity: the ServiceAccount rampart-system/rampart with exactly what
# config/ ships (both ClusterRoles, the leader-election Role, the admission policy), and
# .local/kubeconfig-rampart, the admin kubeconfig impersonating it. Prints that path.
install_shipped_identity() {
  kubectl apply -f "$root/config/namespace.yaml" >/dev/null
  kubectl apply -f "$root/config/rbac/" >/dev/null
  kubectl apply -f "$root/config/admission/" >/dev/null
  local kc="$root/.local/kubeconfig-rampart"
  python3 - "$KUBECONFIG" "$kc" <<'PY'
import sys
text = open(sys.argv[1]).read()
# The admin's client certificate, acting as the account (what `kubectl --as` does).
marker = "  user:\n"
assert marker in text, "no user in the kubeconfig"
text = text.replace(marker, marker + "    as: system:serviceaccount:rampart-system:rampart\n", 1)
open(sys.argv[2], "w").write(text)
PY
  # The API server loads a new policy from a watch: wait until it refuses what it should.
  for _ in $(seq 1 150); do
    local answer
    answer=$(KUBECONFIG="$kc" kubectl create job rampart-policy-probe --image=example.com/x -n rampart-system \
      --dry-run=server 2>&1 || true)
    if [[ "$answer" == *ValidatingAdmissionPolicy* ]]; then
      echo "$kc"
      return 0
    fi
    sleep 0.2
  done
  echo "the admission policy in config/admission/ did not take effect in 30 s" >&2
  return 1
}

# wait_operator PORT PID LOG [PATH] [TRIES]: polls http://127.0.0.1:PORT/PATH (default readyz)
# every 0.1 s until it answers; fails with the log's tail when the process exits first or
# TRIES (default 300) run out.
wait_operator() {
  local port=$1 pid=$2 log=$3 path=${4:-readyz} tries=${5:-300}
  for _ in $(seq 1 "$tries"); do
    curl -fsS "http://127.0.0.1:$port/$path" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the operator exited; see $log" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "the operator did not answer /$path within $((tries / 10)) s; see $log" >&2
  return 1
}

# Stops the operator `make demo` leaves running (its pid in .local/pids/operator.pid):
# SIGTERM, so it closes its write fence and exits, then SIGKILL if it has not after 10 s.
stop_demo_operator() {
  local pid_file="$root/.local/pids/operator.pid" pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped the operator an earlier \`make demo\` left running (pid $pid)"
  fi
  rm -f "$pid_file"
}

# Uses the local plane if one answers, else starts one and stops it when the script exits.
use_or_start_plane() {
  plane_running && return 0
  bash "$root/e2e/controlplane/up.sh"
  trap 'rc=$?; bash "$root/e2e/controlplane/down.sh"; exit $rc' EXIT INT TERM
}
