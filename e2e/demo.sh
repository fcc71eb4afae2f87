#!/usr/bin/env bash
# `make demo`: the control plane, the sample estate, the samples, the operator, a Ready
# profile and its drift report. The control plane and the operator keep running afterwards;
# `make down` stops both.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
step() { printf '\n==> %s\n' "$*"; }

step "local control plane"
bash e2e/controlplane/up.sh

step "the HardeningProfile CRD"
install_crd

step "the sample estate (countly, kafka, clickhouse, mongodb, observability)"
kubectl apply --server-side --force-conflicts -f e2e/demo/estate.yaml

step "the data stores' pods, each on a volume made for the node it was scheduled to"
# The default class waits for the first consumer, as on the managed clouds: each PVC binds
# once the scheduler has placed its pod.
for sts in kafka/kafka clickhouse/clickhouse mongodb/mongodb; do
  kubectl -n "${sts%%/*}" rollout status "statefulset/${sts#*/}" --timeout=180s
done
kubectl get pvc -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,STATUS:.status.phase,CLASS:.spec.storageClassName,NODE:.metadata.annotations.volume\.kubernetes\.io/selected-node'

step "the operator"
mkdir -p .local/logs .local/pids
# Always the binary just built: an operator left from an earlier run is stopped first.
stop_demo_operator
port=$(free_port)
setsid nohup ./target/debug/rampart run --metrics-addr "127.0.0.1:$port" >.local/logs/operator.log 2>&1 < /dev/null &
echo $! > .local/pids/operator.pid
echo "$port" > .local/operator-port
echo "started (pid $!, log .local/logs/operator.log)"
wait_operator "$port" "$(cat .local/pids/operator.pid)" .local/logs/operator.log
echo "ready (caches synced): http://127.0.0.1:$port/readyz"

step "the samples (config/samples/)"
kubectl apply --server-side --force-conflicts -f config/samples/

step "waiting for hp/regulated to be Ready"
kubectl wait --for=condition=Ready hp/regulated --timeout=120s

step "profiles"
kubectl get hardeningprofiles
step "hp/regulated status"
kubectl get hp regulated -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}' | column -t -s $'\t'
echo
kubectl get hp regulated -o jsonpath='summary: {.status.summary}{"\n"}budgets left to users: {.status.coveredByUserBudgets}{"\n"}drain blockers: {.status.drainBlockingBudgets}{"\n"}'
step "what Rampart made"
kubectl get networkpolicies,poddisruptionbudgets -A -l app.kubernetes.io/managed-by=rampart
# A first apply creates: it repairs nothing (summary.createdObjects, rampart_objects_created_total).
kubectl get events -A --field-selector involvedObject.name=regulated,reason=Created -o custom-columns=WHEN:.eventTime,MESSAGE:.message | tail -3

step "drift: deleting a managed policy and editing another"
kubectl -n kafka delete networkpolicy rampart-allow-dns
kubectl -n kafka patch networkpolicy rampart-default-deny --type merge -p '{"spec":{"podSelector":{"matchLabels":{"only":"this"}}}}'
sleep 2
kubectl -n kafka get networkpolicy rampart-allow-dns rampart-default-deny -o custom-columns=NAME:.metadata.name,CREATED:.metadata.creationTimestamp,SELECTOR:.spec.podSelector
kubectl get events -A --field-selector involvedObject.name=regulated,reason=Repaired -o custom-columns=WHEN:.eventTime,MESSAGE:.message | tail -3
kubectl get hp regulated -o jsonpath='summary: {.status.summary}{"\n"}'

step "secret rotation: bumping rotationId (watch the batches)"
kubectl get hp regulated -o jsonpath='before: {.status.rotation}{"\n"}'
rotation_id="demo-$(date +%s)"
kubectl patch hp regulated --type merge -p "{\"spec\":{\"secretRotation\":{\"rotationId\":\"$rotation_id\"}}}"
for _ in $(seq 1 60); do
  # Until the operator has taken the new id up, status.rotation still describes the previous
  # rotation (Complete): print only progress that belongs to the id just set.
  line=$(kubectl get hp regulated -o jsonpath='{.status.rotation.observedRotationId} {.status.rotation.phase} secrets {.status.rotation.secretsRotated}/{.status.rotation.secretsSelected} (adopted {.status.rotation.secretsAdopted}) workloads {.status.rotation.workloadsRestarted}/{.status.rotation.workloadsTotal} in progress: {.status.rotation.inProgress}')
  case "$line" in
    "$rotation_id "*) echo "  ${line#"$rotation_id "}" ;;
    *) echo "  waiting for the operator to take up $rotation_id"; sleep 1; continue ;;
  esac
  case "$line" in "$rotation_id Complete"*) break ;; esac
  sleep 1
done
kubectl get deploy,statefulset -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,ROTATION:.spec.template.metadata.annotations.rampart\.dev/rotation-id,RESTARTED:.spec.template.metadata.annotations.rampart\.dev/restarted-at' | grep -v '<none>.*<none>' || true

step "snapshots of the sample PVCs, cut by the local CSI hostpath driver (hostpath.csi.rampart.dev)"
kubectl get pvc -A -l backup=true -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,STATUS:.status.phase,VOLUME:.spec.volumeName,CLASS:.spec.storageClassName'
# snapshotOnCreate: the profile took one snapshot per PVC at once; snapshot-controller and
# csi-snapshotter have the driver archive each volume directory.
want=$(kubectl get pvc -A -l backup=true -o name | wc -l)
for _ in $(seq 1 60); do
  [ "$(kubectl get volumesnapshots -A -l rampart.dev/profile=regulated -o name | wc -l)" -ge "$want" ] && break
  sleep 1
done
kubectl wait --for=jsonpath='{.status.readyToUse}'=true volumesnapshots -A -l rampart.dev/profile=regulated --timeout=60s >/dev/null
kubectl get volumesnapshots -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,PVC:.spec.source.persistentVolumeClaimName,SLOT:.metadata.annotations.rampart\.dev/slot,READY:.status.readyToUse,SIZE:.status.restoreSize,CONTENT:.status.boundVolumeSnapshotContentName'
echo "archives: $(sed -n 's/^CSI_STATE_DIR=//p' .local/env)/snapshots/"
kubectl get hp regulated -o jsonpath='backups: {.status.backups}{"\n"}'
kubectl wait --for=jsonpath='{.status.conditions[?(@.type=="BackupsHealthy")].reason}'=Healthy hp/regulated --timeout=30s >/dev/null || true
kubectl get hp regulated -o jsonpath='{range .status.conditions[?(@.type=="BackupsHealthy")]}{.type} {.status} {.reason}: {.message}{"\n"}{end}'

step "the Audit profile's drift report (hp/observability-audit)"
kubectl wait --for=condition=Drifted hp/observability-audit --timeout=60s
kubectl get hp observability-audit -o jsonpath='{range .status.drift[*]}{.namespace}{"\t"}{.kind}{"\t"}{.name}{"\t"}{.reason}{"\n"}{end}' | column -t -s $'\t'

step "metrics"
echo "http://127.0.0.1:$port/metrics"
curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^rampart_(profile_ready|profile_info|drifted_objects|managed_objects|objects_created_total|repairs_total)' | head -24
printf '\nThe control plane and the operator keep running: export KUBECONFIG=%s\nStop both with: make down\n' "$KUBECONFIG"
