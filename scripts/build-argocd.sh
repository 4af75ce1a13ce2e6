#!/usr/bin/env bash
# Builds Argo CD's application controller and repo server (and the kustomize binary the repo
# server runs) from Go modules into a cache keyed by version, with Argo CD's CRDs; prints the
# directory. A second run is a no-op. Opt-in: scripts/setup.sh --with-argocd.
#
# Argo CD's own main is one multicall binary (server, UI, dex, notifications...), and its go.mod
# replaces gitops-engine with ./gitops-engine, a nested module a module zip never contains. So a
# wrapper module is written here: Argo CD's go.mod (every other replace and pin as upstream wrote
# it) renamed, with that one replace dropped (gitops-engine of the same release is published),
# and one small main per component calling Argo CD's own `commands.NewCommand()`. Argo CD 3.6
# needs Go 1.27: the go command fetches that toolchain from the Go module proxy.
set -euo pipefail
argocd_version=v3.6.2
kustomize_version=v5.8.1
go_toolchain=go1.27.4
out="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/argocd/$argocd_version"
components=(argocd-application-controller argocd-repo-server)

ready=1
for c in "${components[@]}" kustomize git-verify-wrapper.sh; do [ -x "$out/$c" ] || ready=0; done
[ -d "$out/crds" ] || ready=0
if [ "$ready" = 1 ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-argocd: Go >= 1.21 is needed (it fetches $go_toolchain itself); run scripts/setup.sh" >&2; exit 1; }
export GOTOOLCHAIN="$go_toolchain" GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
echo "build-argocd: building ${components[*]} $argocd_version and kustomize $kustomize_version into $out (first time only)" >&2
rm -rf "$out.tmp" && mkdir -p "$out.tmp/wrapper"
mod=github.com/argoproj/argo-cd/v3
dir=$(cd "$out.tmp" && go mod download -json "$mod@$argocd_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -n "$dir" ] && [ -d "$dir" ] || { echo "build-argocd: could not download $mod@$argocd_version from the Go module proxy" >&2; exit 1; }
(
  cd "$out.tmp/wrapper"
  cp "$dir/go.mod" "$dir/go.sum" . && chmod u+w go.mod go.sum
  go mod edit -module=niximage.io/testbed/argocd -dropreplace=github.com/argoproj/argo-cd/gitops-engine/v3 -require="$mod@$argocd_version"
  for c in "${components[@]}"; do
    mkdir -p "cmd/$c"
    printf '%s\n' "// $c of Argo CD $argocd_version (upstream's main is a multicall binary)." "package main" "" \
      "import (" '	"os"' "" "	\"$mod/cmd/$c/commands\"" ")" "" \
      "func main() {" "	if err := commands.NewCommand().Execute(); err != nil {" "		os.Exit(1)" "	}" "}" >"cmd/$c/main.go"
  done
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/" ./cmd/...
)
GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
# The repo server runs this script (shipped in Argo CD's image) for every revision it renders.
install -m 0755 "$dir/hack/git-verify-wrapper.sh" "$out.tmp/git-verify-wrapper.sh"
mkdir -p "$out.tmp/crds" && cp "$dir/manifests/crds/"*-crd.yaml "$out.tmp/crds/"
rm -rf "$out.tmp/wrapper"
mkdir -p "$out" && rm -rf "$out/crds" && mv "$out.tmp"/* "$out/" && rmdir "$out.tmp"
echo "build-argocd: done in $(($(date +%s) - start))s" >&2
echo "$out"
