#!/usr/bin/env bash
# Builds cosign and oras from the Go module proxy (release downloads are not reachable here) into
# caches keyed by version; prints the two directories (cosign first). A second run is a no-op.
# The tests use them as independent clients of what the push step attaches: `cosign verify` /
# `verify-attestation` for signatures, `oras discover` for referrers through the tag fallback.
set -euo pipefail
cosign_version=v2.6.5
oras_version=v1.3.6
cache="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator"

# build <name> <module path of the main package> <version> <ldflags>
build() {
  local name=$1 module=$2 version=$3 ldflags=$4
  local out="$cache/$name-$version"
  if [ ! -x "$out/$name" ]; then
    echo "build-supply-chain-tools: building $name $version into $out" >&2
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    GOBIN="$out.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w $ldflags" "$module@$version"
    mkdir -p "$out" && mv "$out.tmp/$name" "$out/$name" && rmdir "$out.tmp"
  fi
  echo "$out"
}

build cosign github.com/sigstore/cosign/v2/cmd/cosign "$cosign_version" "-X sigs.k8s.io/release-utils/version.gitVersion=$cosign_version"
build oras oras.land/oras/cmd/oras "$oras_version" "-X oras.land/oras/internal/version.Version=${oras_version#v} -X oras.land/oras/internal/version.BuildMetadata="
