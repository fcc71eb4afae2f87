#!/usr/bin/env bash
# Builds e2e/tools/kstatus (cli-utils' kstatus reading one object from stdin) and caches it
# outside the repository, keyed by a hash of its source, the way build.sh caches the control
# plane; prints the binary's path. The gitops e2e suite runs it.
set -euo pipefail
here=$(cd "$(dirname "$0")/kstatus" && pwd)
cache=${RAMPART_CACHE:-$HOME/.cache/rampart}
hash=$(cd "$here" && cat go.mod go.sum main.go | sha256sum | cut -c1-12)
out="$cache/kstatus-$hash/kstatus"
if [ ! -x "$out" ]; then
  command -v go >/dev/null || { echo "[kstatus-build] go is not installed" >&2; exit 1; }
  echo "[kstatus-build] building kstatus (cli-utils) into $out" >&2
  mkdir -p "$(dirname "$out")"
  (cd "$here" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "$out.tmp" . && mv "$out.tmp" "$out")
fi
echo "$out"
