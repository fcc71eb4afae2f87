#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules and caches them
# outside the repository, keyed by version, so a fresh clone rebuilds nothing.
#
#   e2e/tools/build.sh            build what is missing, print the bin directory
#   e2e/tools/build.sh --print    only print the bin directory (Kubernetes, etcd, kwok, helm)
#   e2e/tools/build.sh --print-path   every bin directory, PATH-style (those plus the CSI stack)
#
# Each tool gets its own small module under e2e/tools/<tool>/ because their
# dependency graphs disagree (kwok and helm pin older k8s.io libraries than
# kubernetes itself). The go.mod files are generated here, never typed by hand:
# kubernetes' own go.mod maps every k8s.io staging module to ./staging, which
# a consumer cannot use, so we read that list from the .mod the proxy serves
# and replace each entry with the published staging version.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${K8S_VERSION#v1.}}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.7.0}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.4.0}

here=$(cd "$(dirname "$0")" && pwd)
cache=${RAMPART_CACHE:-$HOME/.cache/rampart}
bin="$cache/k8s-$K8S_VERSION/bin"
crd_dir="$cache/k8s-$K8S_VERSION/snapshot-crds"

# The CSI stack has its own keys: the sidecars by their release, our hostpath driver by a
# hash of its source (it changes with this repository, not with a release).
csi_bin="$cache/csi/external-snapshotter-$SNAPSHOTTER_VERSION+external-provisioner-$PROVISIONER_VERSION/bin"
driver_hash=$(cd "$here/csi-hostpath" && cat go.mod $(ls go.sum *.go 2>/dev/null | sort) | sha256sum | cut -c1-12)
driver_bin="$cache/csi/hostpath-$driver_hash/bin"

case "${1:-}" in
  --print) echo "$bin"; exit 0 ;;
  # Every directory the control plane runs binaries from, PATH-style.
  --print-path) echo "$bin:$csi_bin:$driver_bin"; exit 0 ;;
esac

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$bin" "$crd_dir"

log() { printf '[controlplane-build] %s\n' "$*" >&2; }
die() { printf '[controlplane-build] ERROR: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go is not installed (needed to build the control plane)"

# write_module DIR MODULE_PATH REQUIRE... : a go.mod plus a tools.go that
# blank-imports the commands, so `go mod tidy` records their whole graph.
write_module() {
  local dir=$1 path=$2; shift 2
  mkdir -p "$dir"
  if [ ! -f "$dir/go.mod" ]; then
    log "generating $dir/go.mod"
    (cd "$dir" && go mod init "$path" >/dev/null 2>&1)
    for req in "$@"; do (cd "$dir" && go mod edit -require="$req"); done
  fi
}

tools_go() {
  local dir=$1; shift
  {
    echo '//go:build tools'
    echo
    echo '// Package tools pins the commands built for the local control plane.'
    echo 'package tools'
    echo
    echo 'import ('
    for p in "$@"; do echo "	_ \"$p\""; done
    echo ')'
  } >"$dir/tools.go"
}

# build DIR OUT PKG [LDFLAGS [BIN_DIR]]
build() {
  local dir=$1 out=$2 pkg=$3 ldflags=${4:-} to=${5:-$bin}
  if [ -x "$to/$out" ]; then return 0; fi
  mkdir -p "$to"
  log "building $out from $pkg (slow the first time)"
  local t0=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$to/$out.tmp.$$" "$pkg") \
    || die "go build of $pkg failed (module $dir)"
  mv "$to/$out.tmp.$$" "$to/$out"
  log "built $out in $((SECONDS - t0))s"
}

# replaces_from_upstream DIR MODULE@VERSION: a command's own replace lines do not apply when
# it is built from another module, so copy those that pin a published version (the ones
# pointing into the upstream tree, like ./client, are covered by a require instead).
replaces_from_upstream() {
  local dir=$1 modver=$2 modfile
  modfile=$(cd "$dir" && go mod download -json "$modver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$modfile" ] || die "could not download $modver's go.mod"
  grep -E '^\s*(replace\s+)?[^ ]+ => [^ .][^ ]* v[0-9]' "$modfile" | sed -E 's/^\s*(replace\s+)?//' \
    | while read -r from _ to ver; do (cd "$dir" && go mod edit -replace="$from=$to@$ver"); done
}

# --- kubernetes -------------------------------------------------------------
k8s_dir="$here/kubernetes"
if [ ! -f "$k8s_dir/go.mod" ]; then
  write_module "$k8s_dir" rampart.dev/e2e/tools/kubernetes "k8s.io/kubernetes@$K8S_VERSION"
  modfile=$(cd "$k8s_dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$modfile" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION's go.mod"
  for m in $(grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$modfile" | awk '{print $1}'); do
    (cd "$k8s_dir" && go mod edit -replace="$m=$m@$STAGING_VERSION")
  done
fi
tools_go "$k8s_dir" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
if [ ! -f "$k8s_dir/go.sum" ]; then (cd "$k8s_dir" && go mod tidy) || die "go mod tidy failed in $k8s_dir"; fi
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
k8s_ld="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build "$k8s_dir" "$c" "k8s.io/kubernetes/cmd/$c" "$k8s_ld"
done

# --- etcd -------------------------------------------------------------------
etcd_dir="$here/etcd"
write_module "$etcd_dir" rampart.dev/e2e/tools/etcd "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
tools_go "$etcd_dir" go.etcd.io/etcd/server/v3
if [ ! -f "$etcd_dir/go.sum" ]; then (cd "$etcd_dir" && go mod tidy) || die "go mod tidy failed in $etcd_dir"; fi
build "$etcd_dir" etcd go.etcd.io/etcd/server/v3

# --- kwok -------------------------------------------------------------------
kwok_dir="$here/kwok"
write_module "$kwok_dir" rampart.dev/e2e/tools/kwok "sigs.k8s.io/kwok@$KWOK_VERSION"
tools_go "$kwok_dir" sigs.k8s.io/kwok/cmd/kwok
if [ ! -f "$kwok_dir/go.sum" ]; then (cd "$kwok_dir" && go mod tidy) || die "go mod tidy failed in $kwok_dir"; fi
build "$kwok_dir" kwok sigs.k8s.io/kwok/cmd/kwok

# --- helm -------------------------------------------------------------------
helm_dir="$here/helm"
write_module "$helm_dir" rampart.dev/e2e/tools/helm "helm.sh/helm/v3@$HELM_VERSION"
tools_go "$helm_dir" helm.sh/helm/v3/cmd/helm
if [ ! -f "$helm_dir/go.sum" ]; then (cd "$helm_dir" && go mod tidy) || die "go mod tidy failed in $helm_dir"; fi
build "$helm_dir" helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"

# --- cyclonus ---------------------------------------------------------------
# An independent NetworkPolicy engine: the reachability suite lets it read Rampart's
# policies from the API server and simulate a probe (no traffic; kwok has no pod network).
# Its own module: it pins k8s.io libraries at v0.30, older than everything above. It builds
# with Go 1.26 as its module graph resolves (no pins needed).
CYCLONUS_VERSION=${CYCLONUS_VERSION:-v0.5.6}
cyclonus_dir="$here/cyclonus"
write_module "$cyclonus_dir" rampart.dev/e2e/tools/cyclonus "github.com/mattfenwick/cyclonus@$CYCLONUS_VERSION"
tools_go "$cyclonus_dir" github.com/mattfenwick/cyclonus/cmd/cyclonus
if [ ! -f "$cyclonus_dir/go.sum" ]; then (cd "$cyclonus_dir" && go mod tidy) || die "go mod tidy failed in $cyclonus_dir"; fi
build "$cyclonus_dir" cyclonus github.com/mattfenwick/cyclonus/cmd/cyclonus "-X github.com/mattfenwick/cyclonus/pkg/cli.version=$CYCLONUS_VERSION"

# --- CSI: external-snapshotter (snapshot-controller, csi-snapshotter sidecar) ----------
# The two sidecars pin different k8s.io library versions (v0.37.0, and v0.36.1 through
# their replaces), so each gets its own module.
snapshotter_dir="$here/external-snapshotter"
if [ ! -f "$snapshotter_dir/go.mod" ]; then
  write_module "$snapshotter_dir" rampart.dev/e2e/tools/external-snapshotter \
    "github.com/kubernetes-csi/external-snapshotter/v8@$SNAPSHOTTER_VERSION" \
    "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION"
  replaces_from_upstream "$snapshotter_dir" "github.com/kubernetes-csi/external-snapshotter/v8@$SNAPSHOTTER_VERSION"
fi
tools_go "$snapshotter_dir" github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller \
  github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter
if [ ! -f "$snapshotter_dir/go.sum" ]; then (cd "$snapshotter_dir" && go mod tidy) || die "go mod tidy failed in $snapshotter_dir"; fi
for c in snapshot-controller csi-snapshotter; do
  build "$snapshotter_dir" "$c" "github.com/kubernetes-csi/external-snapshotter/v8/cmd/$c" "-X main.version=$SNAPSHOTTER_VERSION" "$csi_bin"
done

# --- CSI: external-provisioner ------------------------------------------------
provisioner_dir="$here/external-provisioner"
if [ ! -f "$provisioner_dir/go.mod" ]; then
  write_module "$provisioner_dir" rampart.dev/e2e/tools/external-provisioner \
    "github.com/kubernetes-csi/external-provisioner/v6@$PROVISIONER_VERSION"
  replaces_from_upstream "$provisioner_dir" "github.com/kubernetes-csi/external-provisioner/v6@$PROVISIONER_VERSION"
fi
tools_go "$provisioner_dir" github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
if [ ! -f "$provisioner_dir/go.sum" ]; then (cd "$provisioner_dir" && go mod tidy) || die "go mod tidy failed in $provisioner_dir"; fi
build "$provisioner_dir" csi-provisioner github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner "-X main.version=$PROVISIONER_VERSION" "$csi_bin"

# --- CSI: our hostpath driver (e2e/tools/csi-hostpath, our own code) -----------------
build "$here/csi-hostpath" rampart-csi-hostpath . "-X main.version=src-$driver_hash" "$driver_bin"

# --- kwok stages --------------------------------------------------------------
# kwok needs Stage objects to move fake nodes and pods through their lifecycle. Its module
# ships the upstream "fast" set (node initialize, lease heartbeat, pod ready/complete/delete);
# we read it from the module cache at build time rather than carry a copy.
stages="$cache/k8s-$K8S_VERSION/kwok-stages.yaml"
if [ ! -f "$stages" ]; then
  kwok_src=$(cd "$kwok_dir" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$kwok_src/kustomize/stage" ] || die "no kustomize/stage in sigs.k8s.io/kwok@$KWOK_VERSION"
  for f in "$kwok_src"/kustomize/stage/node/fast/*.yaml "$kwok_src"/kustomize/stage/node/heartbeat-with-lease/*.yaml "$kwok_src"/kustomize/stage/pod/fast/*.yaml; do
    case "$(basename "$f")" in kustomization.yaml) continue ;; esac
    cat "$f"; echo "---"
  done >"$stages.tmp"
  mv "$stages.tmp" "$stages"
fi

# --- VolumeSnapshot CRDs ----------------------------------------------------
if [ ! -f "$crd_dir/.done" ]; then
  snap_dir=$(cd "$helm_dir" && go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$snap_dir/config/crd" ] || die "no config/crd in external-snapshotter client $SNAPSHOTTER_VERSION"
  cp "$snap_dir"/config/crd/snapshot.storage.k8s.io_*.yaml "$crd_dir/"
  touch "$crd_dir/.done"
fi

echo "$bin"
