#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from
# Kubernetes' Go modules (testbed/k8s) into a cache keyed by version. A second run is a no-op.
# No release binaries can be downloaded on these machines; the Go module proxy is reachable.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {sub(/^v/,"",$2); print $2; exit}' "$here/testbed/k8s/go.mod")
out="${NIO_K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/k8s/v$version}"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

missing=()
for c in "${components[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: Go >= 1.24 is needed to build Kubernetes $version (apt-get install golang or use the machine's Go)" >&2; exit 1; }
major=${version%%.*}; minor=$(echo "$version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=v$version"
mkdir -p "$out.tmp"
echo "build-k8s: building ${missing[*]} v$version into $out (first time only; tens of minutes on 2 cores)" >&2
start=$(date +%s)
cd "$here/testbed/k8s"
pkgs=(); for c in "${missing[@]}"; do pkgs+=("./cmd/$c"); done
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}"
mkdir -p "$out"; mv "$out.tmp"/* "$out/"; rmdir "$out.tmp"
echo "build-k8s: done in $(( $(date +%s) - start ))s" >&2
echo "$out"
