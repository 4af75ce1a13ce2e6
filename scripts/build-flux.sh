#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from their Go modules (Go module proxy)
# into a cache keyed by version, with their CRDs; prints the directory. A second run is a no-op.
#
# `go install github.com/fluxcd/source-controller@v` does not work: its go.mod replaces its ./api
# submodule with a local path, and a module zip never contains a nested module. So each module is
# downloaded, its go.mod has only that one replace dropped (the published api module of the same
# release is used instead; every other replace and pin stays as upstream wrote it), and upstream's
# own main package is built, unchanged.
#
# Version: v1.9.6, not v1.10.x: the Go module proxy these machines reach answers 403 ("This module
# version is not available") for several dependency versions v1.10.0/v1.10.1 pin (fluxcd/pkg/
# masktoken v0.10.0, spiffe v0.2.0, apis/crypto v0.5.0, artifact v0.27.x, http/transport v0.9.0,
# http/fetch v0.30.x, sigstore/cosign/v3 v3.1.4, ...). v1.9.6 resolves except one pin, replaced
# below with the nearest version the proxy has (a patch-level step back: same API).
# Flux 1.9 needs Go 1.26: the go command fetches that toolchain from the Go module proxy
# (golang.org/toolchain) when the machine's Go is older.
set -euo pipefail
flux_version=v1.9.6
go_toolchain=go1.26.8
# "<controller> <module>@<version>": pins the proxy does not serve, replaced by one it does.
proxy_gaps=("source-controller github.com/fluxcd/pkg/artifact@v0.18.0")
out="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/flux/$flux_version"
controllers=(source-controller kustomize-controller)

ready=1
for c in "${controllers[@]}"; do [ -x "$out/$c" ] && [ -d "$out/crds/$c" ] || ready=0; done
if [ "$ready" = 1 ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-flux: Go >= 1.21 is needed (it fetches $go_toolchain itself); run scripts/setup.sh" >&2; exit 1; }
go_minor=$(GOTOOLCHAIN=local go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ "${go_minor:-0}" -ge 26 ]; then export GOTOOLCHAIN=local; else export GOTOOLCHAIN="$go_toolchain"; fi
export GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
echo "build-flux: building ${controllers[*]} $flux_version into $out (first time only)" >&2
rm -rf "$out.tmp" && mkdir -p "$out.tmp/crds"
for c in "${controllers[@]}"; do
  mod="github.com/fluxcd/$c"
  dir=$(cd "$out.tmp" && go mod download -json "$mod@$flux_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || { echo "build-flux: could not download $mod@$flux_version from the Go module proxy" >&2; exit 1; }
  src="$out.tmp/src-$c"
  cp -r "$dir" "$src" && chmod -R u+w "$src"
  (
    cd "$src"
    go mod edit -dropreplace="$mod/api" -require="$mod/api@$flux_version"
    for gap in "${proxy_gaps[@]}"; do
      set -- $gap
      [ "$1" = "$c" ] && go mod edit -replace="${2%@*}=$2"
    done
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/$c" .
  )
  cp -r "$src/config/crd/bases" "$out.tmp/crds/$c"
  rm -rf "$src"
  echo "build-flux: $c built after $(($(date +%s) - start))s" >&2
done
mkdir -p "$out" && rm -rf "$out/crds" && mv "$out.tmp"/* "$out/" && rmdir "$out.tmp"
echo "build-flux: done in $(($(date +%s) - start))s" >&2
echo "$out"
