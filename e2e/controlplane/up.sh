#!/usr/bin/env bash
# Starts a real local control plane on free loopback ports, the way envtest does, plus the
# controllers and kwok fake nodes so workloads get Running, Ready pods:
#   etcd → kube-apiserver (own CA, admin client cert in system:masters, RBAC, SA keys)
#   → kube-controller-manager → kube-scheduler → kwok + 2 fake nodes (each with the CSINode
#     and the ephemeral-storage capacity a kubelet would report)
#   → VolumeSnapshot CRDs → the CSI stack: our hostpath driver on a unix socket,
#     csi-provisioner, csi-snapshotter, snapshot-controller, its CSIDriver object, the default
#     StorageClass rampart-hostpath (WaitForFirstConsumer, as on the managed clouds), an
#     Immediate one (rampart-hostpath-immediate) and the VolumeSnapshotClass csi-snapclass.
# State lives in .local/ (git-ignored), or in RAMPART_PLANE_DIR for a second plane beside it.
# RAMPART_SNAPSHOT_API=later leaves out the VolumeSnapshot CRDs, their class and the snapshot
# sidecars, for tests of an operator that starts before a cluster serves the snapshot API.
# Idempotent: a healthy plane is left as it is; a half started one is stopped and started
# again. On failure: one message naming the step and its log, and everything started is
# stopped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
started=$(date +%s%N)
L="${RAMPART_PLANE_DIR:-$root/.local}"
snapshot_api=${RAMPART_SNAPSHOT_API:-now}
mkdir -p "$L/logs" "$L/pids" "$L/pki"
say() { printf '[up] %s\n' "$*"; }
fail() {
  local step=$1 log=${2:-}
  printf '[up] FAILED at step "%s"' "$step" >&2
  if [ -n "$log" ]; then printf '; log: %s\n' "$log" >&2; tail -n 20 "$log" >&2 2>/dev/null || true; else printf '\n' >&2; fi
  RAMPART_PLANE_DIR="$L" bash "$root/e2e/controlplane/down.sh" >/dev/null 2>&1 || true
  exit 1
}
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || fail "checking tools: $tool is not installed (apt-get install $tool)"
done

BIN=$(bash e2e/tools/build.sh) || fail "building the control plane binaries (e2e/tools/build.sh)"
BIN_PATH=$(bash e2e/tools/build.sh --print-path)
export PATH="$BIN_PATH:$PATH"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok \
  rampart-csi-hostpath csi-provisioner csi-snapshotter snapshot-controller; do
  command -v "$b" >/dev/null || fail "finding $b in $BIN_PATH"
done
KUBECONFIG_PATH="$L/kubeconfig"

if [ -f "$KUBECONFIG_PATH" ] && kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=3s get --raw /readyz >/dev/null 2>&1 \
  && ls "$L"/pids/*.pid >/dev/null 2>&1; then
  say "already running ($(kubectl --kubeconfig "$KUBECONFIG_PATH" config view -o jsonpath='{.clusters[0].cluster.server}'))"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  exit 0
fi
if ls "$L"/pids/*.pid >/dev/null 2>&1; then
  say "a previous plane is half up: stopping it first"
  RAMPART_PLANE_DIR="$L" bash "$root/e2e/controlplane/down.sh" >/dev/null
  mkdir -p "$L/logs" "$L/pids" "$L/pki"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); API_PORT=$(free_port)
KCM_PORT=$(free_port); SCHED_PORT=$(free_port); KWOK_PORT=$(free_port)
PROVISIONER_PORT=$(free_port); SNAPSHOTTER_PORT=$(free_port); SNAPSHOT_CONTROLLER_PORT=$(free_port)

# start NAME LOG CMD...: detached (own session) so it outlives the calling shell.
start() {
  local name=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 < /dev/null &
  echo $! >"$L/pids/$name.pid"
}
alive() { kill -0 "$(cat "$L/pids/$1.pid" 2>/dev/null)" 2>/dev/null; }
# wait_ok STEP LOG TIMEOUT CMD...: retries CMD until it succeeds; stops early when the
# process that writes LOG has died.
wait_ok() {
  local step=$1 log=$2 timeout=$3; shift 3
  local deadline=$((SECONDS + timeout)) proc
  proc=$(basename "$log" .log)
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$step (not healthy after ${timeout}s)" "$log"
    if [ -f "$L/pids/$proc.pid" ] && ! alive "$proc"; then fail "$step (the process exited)" "$log"; fi
    sleep 0.2
  done
}

# --- PKI (kept across restarts; regenerated only when missing) -----------------
P="$L/pki"
if [ ! -f "$P/admin.crt" ]; then
  say "generating a CA, serving and admin certificates, and service-account keys"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rampart-local-ca" -keyout "$P/ca.key" -out "$P/ca.crt"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$P/apiserver.key" -out "$P/apiserver.csr"
    printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >"$P/apiserver.ext"
    openssl x509 -req -in "$P/apiserver.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 3650 -extfile "$P/apiserver.ext" -out "$P/apiserver.crt"
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=rampart-admin" -keyout "$P/admin.key" -out "$P/admin.csr"
    printf 'extendedKeyUsage=clientAuth\n' >"$P/admin.ext"
    openssl x509 -req -in "$P/admin.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 3650 -extfile "$P/admin.ext" -out "$P/admin.crt"
    openssl genrsa -out "$P/sa.key" 2048
    openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub"
  } >"$L/logs/pki.log" 2>&1 || fail "generating certificates with openssl" "$L/logs/pki.log"
fi

# --- etcd ----------------------------------------------------------------------
rm -rf "$L/etcd"
# The audit log (and its rotations) describes one plane: a new plane starts a new one.
rm -f "$L/logs/audit.log" "$L/logs"/audit-*.log
start etcd "$L/logs/etcd.log" etcd --name local --data-dir "$L/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn \
  --listen-metrics-urls "http://127.0.0.1:$(free_port)"
wait_ok "starting etcd" "$L/logs/etcd.log" 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
say "etcd on 127.0.0.1:$ETCD_PORT"

# --- kube-apiserver --------------------------------------------------------------
start kube-apiserver "$L/logs/kube-apiserver.log" kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --client-ca-file "$P/ca.crt" \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --authorization-mode RBAC --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
  --endpoint-reconciler-type none --profiling=false --v=1 \
  --audit-policy-file "$root/e2e/controlplane/audit-policy.yaml" --audit-log-path "$L/logs/audit.log" \
  --audit-log-format json --audit-log-mode blocking
# The kubeconfig embeds its certificates so it works from any directory.
b64() { base64 -w0 <"$1"; }
cat >"$KUBECONFIG_PATH" <<KC
apiVersion: v1
kind: Config
clusters:
- name: rampart-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$P/ca.crt")
users:
- name: rampart-admin
  user:
    client-certificate-data: $(b64 "$P/admin.crt")
    client-key-data: $(b64 "$P/admin.key")
contexts:
- name: rampart-local
  context: {cluster: rampart-local, user: rampart-admin}
current-context: rampart-local
KC
chmod 600 "$KUBECONFIG_PATH"
export KUBECONFIG="$KUBECONFIG_PATH"
wait_ok "starting kube-apiserver" "$L/logs/kube-apiserver.log" 60 kubectl --request-timeout=2s get --raw /readyz
say "kube-apiserver on https://127.0.0.1:$API_PORT"

# --- kube-controller-manager and kube-scheduler --------------------------------------
# The long node grace periods: kwok's lease heartbeats lag when the 2 cores are saturated
# (make bench), a node marked unhealthy gets its pods marked NotReady, and kwok never undoes
# that. Fake nodes never die, so nothing is lost by trusting them.
start kube-controller-manager "$L/logs/kube-controller-manager.log" kube-controller-manager \
  --kubeconfig "$KUBECONFIG_PATH" --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
  --controllers '*,-node-ipam-controller,-persistentvolume-attach-detach-controller' \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" --use-service-account-credentials=false \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --kube-api-qps 200 --kube-api-burst 400 --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 \
  --concurrent-statefulset-syncs 10 --concurrent-namespace-syncs 40 \
  --node-monitor-grace-period 1h --node-startup-grace-period 1h --v=1
start kube-scheduler "$L/logs/kube-scheduler.log" kube-scheduler \
  --kubeconfig "$KUBECONFIG_PATH" --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --v=1
wait_ok "starting kube-controller-manager" "$L/logs/kube-controller-manager.log" 30 curl -kfsS "https://127.0.0.1:$KCM_PORT/healthz"
wait_ok "starting kube-scheduler" "$L/logs/kube-scheduler.log" 30 curl -kfsS "https://127.0.0.1:$SCHED_PORT/healthz"
say "kube-controller-manager and kube-scheduler running"

# --- kwok and its fake nodes ------------------------------------------------------------
start kwok "$L/logs/kwok.log" kwok --kubeconfig "$KUBECONFIG_PATH" --config "$(dirname "$BIN")/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.244.0.0/16 --node-ip 10.0.0.1 --server-address "127.0.0.1:$KWOK_PORT"
sleep 0.3
alive kwok || fail "starting kwok" "$L/logs/kwok.log"
# What a kubelet reports and kwok does not: ephemeral-storage capacity (without it a pod that
# requests ephemeral storage is Insufficient everywhere) and, once the node exists, its
# CSINode (without one the scheduler refuses every pod that mounts a CSI volume). kwok keeps
# the capacity given here: its stages only fill in what a node lacks.
for i in 0 1; do
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
spec: {}
status:
  allocatable: {cpu: "256", memory: 1Ti, ephemeral-storage: 1Ti, pods: "20000"}
  capacity: {cpu: "256", memory: 1Ti, ephemeral-storage: 1Ti, pods: "20000"}
---
NODE
done | kubectl apply --server-side --field-manager rampart-up -f - >"$L/logs/nodes.log" 2>&1 || fail "creating fake nodes" "$L/logs/nodes.log"
# Owned by its Node, as the kubelet makes it, so deleting a node takes its CSINode along.
for i in 0 1; do
  uid=$(kubectl get node "kwok-node-$i" -o jsonpath='{.metadata.uid}' 2>>"$L/logs/nodes.log") \
    || fail "reading node kwok-node-$i" "$L/logs/nodes.log"
  cat <<CSINODE
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata:
  name: kwok-node-$i
  ownerReferences: [{apiVersion: v1, kind: Node, name: kwok-node-$i, uid: $uid}]
spec:
  drivers: [{name: hostpath.csi.rampart.dev, nodeID: kwok-node-$i}]
---
CSINODE
done | kubectl apply --server-side --field-manager rampart-up -f - >>"$L/logs/nodes.log" 2>&1 || fail "creating the nodes' CSINodes" "$L/logs/nodes.log"
wait_ok "waiting for kwok to mark the nodes Ready" "$L/logs/kwok.log" 30 \
  kubectl wait --for=condition=Ready node/kwok-node-0 node/kwok-node-1 --timeout=1s
say "kwok running with 2 fake nodes"

# --- VolumeSnapshot API -------------------------------------------------------------------
CRDS="$(dirname "$BIN")/snapshot-crds"
if [ "$snapshot_api" = now ]; then
kubectl apply --server-side --field-manager rampart-up -f "$CRDS" >"$L/logs/snapshot-crds.log" 2>&1 \
  || fail "installing the VolumeSnapshot CRDs" "$L/logs/snapshot-crds.log"
kubectl wait --for=condition=Established crd/volumesnapshots.snapshot.storage.k8s.io crd/volumesnapshotclasses.snapshot.storage.k8s.io crd/volumesnapshotcontents.snapshot.storage.k8s.io --timeout=30s >>"$L/logs/snapshot-crds.log" 2>&1 \
  || fail "waiting for the VolumeSnapshot CRDs" "$L/logs/snapshot-crds.log"
kubectl apply --server-side --field-manager rampart-up -f e2e/controlplane/volumesnapshotclass.yaml >>"$L/logs/snapshot-crds.log" 2>&1 \
  || fail "creating the VolumeSnapshotClass" "$L/logs/snapshot-crds.log"
say "VolumeSnapshot CRDs installed"
else
  say "VolumeSnapshot CRDs left out (RAMPART_SNAPSHOT_API=$snapshot_api): install them from $CRDS"
fi

# --- the CSI stack ------------------------------------------------------------------------
# Our hostpath driver (volumes are directories under $CSI_STATE_DIR/volumes, snapshots
# checksummed archives under $CSI_STATE_DIR/snapshots) and the upstream sidecars and
# snapshot controller against the local API server. The state goes with the etcd data:
# volumes outliving their PVs would only confuse the next plane.
CSI_STATE_DIR="$L/csi"
rm -rf "$CSI_STATE_DIR"
mkdir -p "$CSI_STATE_DIR"
CSI_SOCKET="$CSI_STATE_DIR/csi.sock"
# A unix socket path is limited to 107 bytes; a deep checkout gets one under /tmp instead.
if [ ${#CSI_SOCKET} -gt 100 ]; then
  CSI_SOCKET="/tmp/rampart-csi-$(printf '%s' "$root" | sha256sum | cut -c1-12).sock"
fi
start rampart-csi-hostpath "$L/logs/rampart-csi-hostpath.log" rampart-csi-hostpath \
  --endpoint "$CSI_SOCKET" --state-dir "$CSI_STATE_DIR" --driver-name hostpath.csi.rampart.dev
wait_ok "starting the CSI hostpath driver" "$L/logs/rampart-csi-hostpath.log" 30 test -S "$CSI_SOCKET"
# Leader election off: one replica of each, and a lease would only slow a restart.
sidecar_flags=(--kubeconfig "$KUBECONFIG_PATH" --leader-election=false --kube-api-qps 100 --kube-api-burst 200)
# The sweep: after a restore, csi-provisioner drops its source-protection finalizer from the
# snapshot, and when that update loses a race with snapshot-controller (a conflict, seen
# here) only the periodic sweep removes it; at the 5 min default a namespace with a restored
# snapshot takes that long to delete.
start csi-provisioner "$L/logs/csi-provisioner.log" csi-provisioner --csi-address "$CSI_SOCKET" \
  "${sidecar_flags[@]}" --http-endpoint "127.0.0.1:$PROVISIONER_PORT" --retry-interval-max 30s \
  --snapshot-orphan-sweep-interval 5s --v=2
if [ "$snapshot_api" = now ]; then
start csi-snapshotter "$L/logs/csi-snapshotter.log" csi-snapshotter --csi-address "$CSI_SOCKET" \
  "${sidecar_flags[@]}" --http-endpoint "127.0.0.1:$SNAPSHOTTER_PORT" --retry-interval-max 30s --v=2
start snapshot-controller "$L/logs/snapshot-controller.log" snapshot-controller \
  "${sidecar_flags[@]}" --http-endpoint "127.0.0.1:$SNAPSHOT_CONTROLLER_PORT" --retry-interval-max 30s --v=2
# The sidecars serve /metrics once they have talked to the driver (GetPluginInfo, Probe).
fi
wait_ok "starting csi-provisioner" "$L/logs/csi-provisioner.log" 60 curl -fsS "http://127.0.0.1:$PROVISIONER_PORT/metrics"
if [ "$snapshot_api" = now ]; then
wait_ok "starting csi-snapshotter" "$L/logs/csi-snapshotter.log" 60 curl -fsS "http://127.0.0.1:$SNAPSHOTTER_PORT/metrics"
wait_ok "starting snapshot-controller" "$L/logs/snapshot-controller.log" 60 curl -fsS "http://127.0.0.1:$SNAPSHOT_CONTROLLER_PORT/metrics"
kubectl apply --server-side --field-manager rampart-up -f e2e/controlplane/volumesnapshotclass.yaml \
  >"$L/logs/csi-classes.log" 2>&1 || fail "creating the VolumeSnapshotClass" "$L/logs/csi-classes.log"
fi
kubectl apply --server-side --field-manager rampart-up -f e2e/controlplane/csidriver.yaml -f e2e/controlplane/storageclass.yaml \
  >>"$L/logs/csi-classes.log" 2>&1 || fail "creating the CSIDriver and the StorageClasses" "$L/logs/csi-classes.log"
say "CSI stack running: driver hostpath.csi.rampart.dev (state in $CSI_STATE_DIR), csi-provisioner$([ "$snapshot_api" = now ] && echo ', csi-snapshotter, snapshot-controller'); StorageClasses rampart-hostpath (default, WaitForFirstConsumer) and rampart-hostpath-immediate$([ "$snapshot_api" = now ] && echo ', VolumeSnapshotClass csi-snapclass')"

wait_ok "waiting for the default ServiceAccount" "$L/logs/kube-controller-manager.log" 30 kubectl -n default get serviceaccount default
cat >"$L/env" <<ENV
KUBECONFIG=$KUBECONFIG_PATH
APISERVER_PORT=$API_PORT
ETCD_PORT=$ETCD_PORT
CSI_STATE_DIR=$CSI_STATE_DIR
CSI_SOCKET=$CSI_SOCKET
ENV
ms=$(( ($(date +%s%N) - started) / 1000000 ))
say "control plane up in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s ($(kubectl version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
echo "export KUBECONFIG=$KUBECONFIG_PATH"
