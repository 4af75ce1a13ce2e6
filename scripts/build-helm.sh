#!/usr/bin/env bash
# Builds Helm from the Go module proxy (Helm is not in Debian and release downloads are not
# reachable here) into a cache keyed by version; prints the directory. A second run is a no-op.
set -euo pipefail
helm_version=v3.19.0
out="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/helm-$helm_version"
if [ ! -x "$out/helm" ]; then
  echo "build-helm: building helm $helm_version into $out" >&2
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" "helm.sh/helm/v3/cmd/helm@$helm_version"
  mkdir -p "$out" && mv "$out.tmp/helm" "$out/helm" && rmdir "$out.tmp"
fi
echo "$out"
