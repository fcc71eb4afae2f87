#!/usr/bin/env bash
# `make lint`: formatting, clippy, the chart, a third-party Kubernetes security scanner
# (checkov) over the rendered chart and config/, and a server-side dry-run of both against
# the local control plane when one is running.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
step() { printf '\n[lint] %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "helm lint"
helm lint charts/rampart
# As a subchart: a parent's `global` values must pass the schema.
helm lint charts/rampart --quiet --set global.imageRegistry=example.com
step "chart README values table matches values.yaml"
python3 e2e/tools/chart-readme.py --check

scan=$(mktemp -d)
trap 'rm -rf "$scan"' EXIT
helm template rampart charts/rampart --kube-version 1.37.2 -n rampart-system >"$scan/chart.yaml"
# Everything on, including the helm test Pod and its NetworkPolicy (rendered by default).
helm template rampart charts/rampart --kube-version 1.37.2 -n rampart-system --set replicaCount=2 \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true \
  --set 'networkPolicy.metricsFromNamespaces={monitoring}' >"$scan/chart-all.yaml"
for f in config/*.yaml config/rbac/*.yaml config/admission/*.yaml; do
  case "$f" in */kustomization.yaml) ;; *) cp "$f" "$scan/config-$(basename "$f")" ;; esac
done

step "checkov (justified skips are annotations on the objects they excuse)"
venv="${RAMPART_CACHE:-$HOME/.cache/rampart}/venv"
if [ ! -x "$venv/bin/checkov" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet checkov
fi
"$venv/bin/checkov" -d "$scan" --framework kubernetes --skip-download --quiet --compact

step "server-side dry-run against the local control plane"
if plane_running; then
  kubectl apply --server-side --dry-run=server -f crds/ >/dev/null
  install_crd
  kubectl apply --dry-run=server -f config/namespace.yaml >/dev/null
  kubectl create namespace rampart-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply --dry-run=server -k config/ >/dev/null
  # ServiceMonitor and PrometheusRule need the Prometheus operator's CRDs, which this plane
  # does not have: the default rendering is what is checked here.
  # Server-side: the chart's CRD (a template) meets the one applied above without kubectl's
  # last-applied warning; the helm test Pod and its NetworkPolicy are checked too.
  kubectl apply --server-side --dry-run=server --force-conflicts --field-manager=rampart-lint -f "$scan/chart.yaml" >/dev/null
  echo "config/ and the rendered chart are accepted by kube-apiserver $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
else
  echo "no local control plane running (make up): skipped"
fi
echo
echo "[lint] all checks passed"
