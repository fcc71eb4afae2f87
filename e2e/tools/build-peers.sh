#!/usr/bin/env bash
# Builds the peers the bench compares Rampart with (today: Kyverno's admission
# controller and background controller) from Go modules, and caches them outside
# the repository keyed by version. Only `make bench-peers` calls this; `make test`
# and `make controlplane` never do (the build is large).
#
#   e2e/tools/build-peers.sh            build what is missing, print the peers directory
#   e2e/tools/build-peers.sh --print    only print the peers directory
#
# The peers directory holds bin/ (kyverno, background-controller) and crds/
# (Kyverno's CRDs copied from the module's config/crds).
#
# Like build.sh, the module under e2e/tools/kyverno/ is generated, never typed
# by hand: Kyverno's go.mod carries `replace` directives (v1.19.1: one, for
# k8s.io/pod-security-admission to Kyverno's fork), which only apply inside its
# own module, so we read every replace from the .mod the proxy serves and copy
# it into ours.
set -euo pipefail

KYVERNO_VERSION=${KYVERNO_VERSION:-v1.19.1}

here=$(cd "$(dirname "$0")" && pwd)
cache=${RAMPART_CACHE:-$HOME/.cache/rampart}
peers="$cache/peers/kyverno-$KYVERNO_VERSION"
bin="$peers/bin"

if [ "${1:-}" = "--print" ]; then echo "$peers"; exit 0; fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$bin" "$peers/crds"

log() { printf '[peers-build] %s\n' "$*" >&2; }
die() { printf '[peers-build] ERROR: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go is not installed (needed to build the peers)"

dir="$here/kyverno"
cmds=(kyverno background-controller)

if [ ! -f "$dir/go.mod" ]; then
  log "generating $dir/go.mod"
  mkdir -p "$dir"
  (cd "$dir" && go mod init rampart.dev/e2e/tools/kyverno >/dev/null 2>&1)
  (cd "$dir" && go mod edit -require="github.com/kyverno/kyverno@$KYVERNO_VERSION")
  modfile=$(cd "$dir" && go mod download -json "github.com/kyverno/kyverno@$KYVERNO_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$modfile" ] || die "could not download github.com/kyverno/kyverno@$KYVERNO_VERSION's go.mod"
  # Both forms: `replace a => b v` on one line and inside a `replace ( ... )` block.
  awk '/^replace \(/{blk=1; next} blk && /^\)/{blk=0; next}
       blk && /=>/ {print; next}
       /^replace [^(]/ {sub(/^replace /, ""); print}' "$modfile" |
    while read -r old _arrow new newv; do
      [ -n "$newv" ] || die "replace of $old in Kyverno's go.mod points at a directory; cannot reproduce it"
      log "replace $old => $new $newv (from Kyverno's go.mod)"
      (cd "$dir" && go mod edit -replace="$old=$new@$newv")
    done
  # Kyverno's go directive can be newer than ours would be; take its.
  gover=$(sed -n 's/^go \(.*\)/\1/p' "$modfile")
  [ -n "$gover" ] && (cd "$dir" && go mod edit -go="$gover")
fi
{
  echo '//go:build tools'
  echo
  echo '// Package tools pins the peer commands the bench compares with.'
  echo 'package tools'
  echo
  echo 'import ('
  for c in "${cmds[@]}"; do echo "	_ \"github.com/kyverno/kyverno/cmd/$c\""; done
  echo ')'
} >"$dir/tools.go"
if [ ! -f "$dir/go.sum" ]; then (cd "$dir" && go mod tidy) || die "go mod tidy failed in $dir"; fi

for c in "${cmds[@]}"; do
  [ -x "$bin/$c" ] && continue
  log "building $c (Kyverno $KYVERNO_VERSION; slow: minutes per command on 2 cores)"
  t0=$SECONDS
  (cd "$dir" && go build -trimpath \
    -ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$KYVERNO_VERSION" \
    -o "$bin/$c.tmp" "github.com/kyverno/kyverno/cmd/$c") || die "go build of cmd/$c failed (module $dir)"
  mv "$bin/$c.tmp" "$bin/$c"
  log "built $c in $((SECONDS - t0))s"
done

if [ ! -f "$peers/crds/.done" ]; then
  src=$(cd "$dir" && go mod download -json "github.com/kyverno/kyverno@$KYVERNO_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src/config/crds" ] || die "no config/crds in github.com/kyverno/kyverno@$KYVERNO_VERSION"
  find "$src/config/crds" -name '*.yaml' ! -name 'kustomization.yaml' -exec cp {} "$peers/crds/" \;
  chmod u+w "$peers"/crds/*.yaml
  touch "$peers/crds/.done"
fi

echo "$peers"
