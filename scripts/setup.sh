#!/usr/bin/env bash
# Installs everything the tests need on a Debian 12 machine, idempotently (a second run only
# checks): Debian packages (Nix, etcd, docker-registry, skopeo, umoci, htpasswd, openssl, git),
# Node >= 22 (scripts/ensure-node.sh), npm dependencies (npm ci, only when the lock file changed),
# a Go >= 1.24 toolchain when none is there (from the Go module proxy), the Kubernetes
# binaries (scripts/build-k8s.sh), Helm, cosign, oras and Flux's source-controller and
# kustomize-controller (scripts/build-flux.sh) (built once and cached by version), and
# checkov from PyPI in a venv (scripts/install-checkov.sh, cached by version).
#
# Usage: scripts/setup.sh [--with-e2e] [--with-argocd]
#   --with-e2e   also what the e2e tier's single-node cluster needs (containerd, runc, CNI,
#                debootstrap, iptables, gcc) and its images, built once (~/.cache/.../e2e)
#   --with-argocd  also Argo CD's controllers (scripts/build-argocd.sh) and redis-server, for
#                the opt-in tier npm run test:argocd
# Environment: NIO_SETUP_NPM_CI=1 forces `npm ci`; NIO_SETUP_SKIP_K8S=1 skips the Kubernetes build;
# NIO_SETUP_SKIP_FLUX=1 skips the Flux build.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator"
go_bootstrap_version=1.24.6 # a Go for building Kubernetes 1.34 when the machine has none >= 1.24
with_e2e=0
with_argocd=0
for arg in "$@"; do
  case "$arg" in
    --with-e2e) with_e2e=1 ;;
    --with-argocd) with_argocd=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\nsetup: ERROR: %s\n' "$*" >&2; exit 1; }

# The Go builds (Kubernetes, Helm, cosign/oras, Flux) run side by side: a cold one spends much of
# its time downloading modules, which overlaps with the others' compiling. Each logs to a file;
# wait_background reports each result and dies with the log's tail on a failure.
bg_dir=$(mktemp -d)
bg_names=()
bg_pids=()
in_background() { # $1: what; the rest: the command
  local what=$1 log="$bg_dir/${#bg_pids[@]}.log"
  shift
  info "building $what in the background (log: $log)"
  "$@" >"$log" 2>&1 &
  bg_names+=("$what|$log")
  bg_pids+=($!)
}
wait_background() {
  local i failed=0
  for i in "${!bg_pids[@]}"; do
    local what=${bg_names[$i]%%|*} log=${bg_names[$i]#*|}
    if wait "${bg_pids[$i]}"; then
      info "$what: built"
    else
      printf '    %s: FAILED; last lines of %s:\n' "$what" "$log" >&2
      tail -n 30 "$log" | sed 's/^/      /' >&2
      failed=1
    fi
  done
  bg_pids=()
  bg_names=()
  [ "$failed" = 0 ] || die "a Go build failed (see above)"
}

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else die "run as root (or install sudo): apt-get is needed"; fi
fi

# ---------------------------------------------------------------------------------------------
step "Debian packages"
[ -r /etc/debian_version ] || info "warning: not a Debian system; package names are Debian 12's"
pkgs=(ca-certificates git openssl openssh-server openssh-client apache2-utils nix-bin etcd-server docker-registry skopeo umoci busybox-static python3 python3-venv)
if [ "$with_argocd" = 1 ]; then pkgs+=(redis-server); fi
if [ "$with_e2e" = 1 ]; then pkgs+=(containerd runc containernetworking-plugins debootstrap iptables iproute2 gcc libc6-dev); fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    info "apt-get update"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  info "apt-get install $*"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; else info "all present: ${pkgs[*]}"; fi

# ---------------------------------------------------------------------------------------------
step "Nix"
nix --version >/dev/null || die "nix does not run (package nix-bin)"
info "$(nix --version)"
if ! NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =' \
  nix eval --raw --impure --expr builtins.currentSystem >/dev/null 2>&1; then
  info "warning: 'nix eval' fails for $(id -un): the Debian single-user store needs root (or a nix-daemon)"
fi
# Nix build users (test/integration/build-users.test.ts builds as them, as the builder image does):
# group nixbld (gid 30000) with nixbld1..8 (uid 30001..30008), created when missing.
if ! getent group nixbld >/dev/null; then
  info "creating the nixbld group and build users nixbld1..8"
  $sudo groupadd --system --gid 30000 nixbld
fi
for i in 1 2 3 4 5 6 7 8; do
  if ! getent passwd "nixbld$i" >/dev/null; then
    $sudo useradd --system --uid $((30000 + i)) --gid nixbld --groups nixbld --no-create-home \
      --home-dir /var/empty --shell /usr/sbin/nologin "nixbld$i" 2>/dev/null
  fi
done

# ---------------------------------------------------------------------------------------------
step "Node.js >= 22"
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if ! command -v node >/dev/null || [ "$(node_major)" -lt 22 ]; then
  # ensure-node.sh brings Node 24 from the npm registry, so it needs some npm to start from.
  command -v npm >/dev/null || apt_install nodejs npm
fi
# --link puts Node 24 on /usr/local/bin (as root) so that `npm test` finds it in this shell.
node_dir=$(bash "$here/scripts/ensure-node.sh" --link)
export PATH="$node_dir/bin:$PATH"
info "node $(node --version) in $node_dir/bin (add it to PATH: export PATH=\$(bash scripts/ensure-node.sh)/bin:\$PATH)"

# ---------------------------------------------------------------------------------------------
step "npm dependencies"
cd "$here"
if [ "${NIO_SETUP_NPM_CI:-0}" = 1 ] || [ ! -f node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ]; then
  info "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
else
  info "node_modules is up to date with package-lock.json (NIO_SETUP_NPM_CI=1 forces npm ci)"
fi

# ---------------------------------------------------------------------------------------------
step "Kubernetes binaries"
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {sub(/^v/,"",$2); print $2; exit}' "$here/testbed/k8s/go.mod")
k8s_dir="${NIO_K8S_BIN:-$cache/k8s/v$version}"
k8s_ready=1
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do [ -x "$k8s_dir/$c" ] || k8s_ready=0; done
go_ok() { # $1: a go binary; true when it is >= 1.24
  local v; v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}; local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 24 ]; }
}
if [ "$k8s_ready" = 1 ]; then
  info "v$version present in $k8s_dir"
elif [ "${NIO_SETUP_SKIP_K8S:-0}" = 1 ]; then
  info "skipped (NIO_SETUP_SKIP_K8S=1); integration tests will fail until $k8s_dir is built"
else
  go_bin=""
  for g in "$(command -v go || true)" /usr/local/go/bin/go "$cache/go-$go_bootstrap_version/bin/go"; do
    if [ -n "$g" ] && [ -x "$g" ] && GOTOOLCHAIN=local go_ok "$g"; then go_bin=$g; break; fi
  done
  if [ -z "$go_bin" ]; then
    # No Go >= 1.24: take Debian's Go (1.19) only to fetch the Go toolchain module
    # golang.org/toolchain from the Go module proxy (what `GOTOOLCHAIN=auto` does in Go >= 1.21).
    info "no Go >= 1.24 found; bootstrapping Go $go_bootstrap_version from the Go module proxy"
    installed golang-go || apt_install golang-go
    arch=$(dpkg --print-architecture)
    mod="golang.org/toolchain@v0.0.1-go$go_bootstrap_version.linux-$arch"
    tmp=$(mktemp -d)
    dir=$(cd "$tmp" && GOFLAGS=-modcacherw GOMODCACHE="$tmp/mod" /usr/bin/go mod download -json "$mod" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    [ -n "$dir" ] && [ -d "$dir" ] || die "could not download $mod from the Go module proxy"
    rm -rf "$cache/go-$go_bootstrap_version.tmp"
    mkdir -p "$cache"
    cp -r "$dir" "$cache/go-$go_bootstrap_version.tmp"
    chmod -R u+w "$cache/go-$go_bootstrap_version.tmp"
    chmod +x "$cache/go-$go_bootstrap_version.tmp"/bin/* "$cache/go-$go_bootstrap_version.tmp"/pkg/tool/*/*
    mv "$cache/go-$go_bootstrap_version.tmp" "$cache/go-$go_bootstrap_version"
    rm -rf "$tmp"
    go_bin="$cache/go-$go_bootstrap_version/bin/go"
  fi
  info "using $(GOTOOLCHAIN=local "$go_bin" version) ($go_bin)"
  export PATH="$(dirname "$go_bin"):$PATH"
  mkdir -p "$cache"
  # One build at a time, even when setup.sh runs twice at once (flock on the lock file).
  in_background "Kubernetes v$version" flock "$cache/build-k8s.lock" bash "$here/scripts/build-k8s.sh"
fi

# ---------------------------------------------------------------------------------------------
step "Helm"
helm_version=$(sed -n 's/^helm_version=//p' "$here/scripts/build-helm.sh")
if [ -x "$cache/helm-$helm_version/helm" ]; then
  info "$helm_version present in $cache/helm-$helm_version"
else
  command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "Go is needed to build Helm (see the Kubernetes step)"
  PATH="$PATH:/usr/local/go/bin" in_background "Helm $helm_version" bash "$here/scripts/build-helm.sh"
fi

# ---------------------------------------------------------------------------------------------
step "cosign and oras (independent clients of the SBOM, provenance and signatures we attach)"
cosign_version=$(sed -n 's/^cosign_version=//p' "$here/scripts/build-supply-chain-tools.sh")
oras_version=$(sed -n 's/^oras_version=//p' "$here/scripts/build-supply-chain-tools.sh")
if [ -x "$cache/cosign-$cosign_version/cosign" ] && [ -x "$cache/oras-$oras_version/oras" ]; then
  info "cosign $cosign_version and oras $oras_version present in $cache"
else
  command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "Go is needed to build cosign and oras (see the Kubernetes step)"
  PATH="$PATH:/usr/local/go/bin" in_background "cosign $cosign_version and oras $oras_version" bash "$here/scripts/build-supply-chain-tools.sh"
fi

# ---------------------------------------------------------------------------------------------
step "checkov (PyPI, in a venv)"
checkov_version=$(sed -n 's/^checkov_version=//p' "$here/scripts/install-checkov.sh")
if [ -f "$cache/checkov-$checkov_version/installed" ]; then
  info "$checkov_version present in $cache/checkov-$checkov_version"
else
  bash "$here/scripts/install-checkov.sh" >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# A Go >= 1.24 (the Kubernetes step's); build-flux.sh and build-argocd.sh have it fetch the Go they need.
modern_go() {
  for g in "$(command -v go || true)" /usr/local/go/bin/go "$cache/go-$go_bootstrap_version/bin/go"; do
    if [ -n "$g" ] && [ -x "$g" ] && GOTOOLCHAIN=local go_ok "$g"; then echo "$g"; return 0; fi
  done
  return 1
}
step "Flux source-controller and kustomize-controller (the GitOps tests; first time: ~10-30 min)"
flux_version=$(sed -n 's/^flux_version=//p' "$here/scripts/build-flux.sh")
if [ -x "$cache/flux/$flux_version/source-controller" ] && [ -x "$cache/flux/$flux_version/kustomize-controller" ]; then
  info "$flux_version present in $cache/flux/$flux_version"
elif [ "${NIO_SETUP_SKIP_FLUX:-0}" = 1 ]; then
  info "skipped (NIO_SETUP_SKIP_FLUX=1); test/integration/gitops-flux.test.ts will fail until it is built"
else
  flux_go=$(modern_go) || die "Go >= 1.24 is needed to build Flux (the Kubernetes step bootstraps one; run setup.sh without NIO_SETUP_SKIP_K8S)"
  mkdir -p "$cache"
  PATH="$(dirname "$flux_go"):$PATH" in_background "Flux $flux_version" flock "$cache/build-flux.lock" bash "$here/scripts/build-flux.sh"
fi

# ---------------------------------------------------------------------------------------------
step "Waiting for the Go builds started above"
wait_background

# ---------------------------------------------------------------------------------------------
if [ "$with_argocd" = 1 ]; then
  step "Argo CD application controller and repo server (opt-in; first time: as long as Flux's build)"
  argocd_go=$(modern_go) || die "Go >= 1.24 is needed to build Argo CD (the Kubernetes step bootstraps one)"
  mkdir -p "$cache"
  exec 9>"$cache/build-argocd.lock"
  flock 9
  PATH="$(dirname "$argocd_go"):$PATH" bash "$here/scripts/build-argocd.sh" >/dev/null
  exec 9>&-
  info "run its test with: npm run test:argocd"
fi

# ---------------------------------------------------------------------------------------------
if [ "$with_e2e" = 1 ]; then
  step "e2e cluster images (pause, Nix builder, operator; first time: debootstrap, ~2 min)"
  [ "$(id -u)" -eq 0 ] || die "the e2e cluster (kubelet, containerd, debootstrap) needs root"
  node "$here/test/e2e/support/cluster-cli.ts" images 2>&1 | sed 's/^/    /'
  node "$here/test/e2e/support/cluster-cli.ts" check 2>&1 | sed 's/^/    /' || die "the e2e cluster cannot start here (see above)"
fi

# ---------------------------------------------------------------------------------------------
step "Versions"
first() { "$@" 2>&1 | head -n1; }
info "node            $(node --version)"
info "nix             $(first nix --version)"
info "etcd            $(first etcd --version)"
info "docker-registry $(first docker-registry --version)"
info "skopeo          $(first skopeo --version)"
info "umoci           $(first umoci --version)"
info "git             $(first git --version)"
info "openssl         $(first openssl version)"
if [ "$with_e2e" = 1 ]; then
  info "containerd      $(first containerd --version)"
  info "runc            $(first runc --version)"
fi
if [ -x "$k8s_dir/kube-apiserver" ]; then info "kubernetes      $(first "$k8s_dir/kube-apiserver" --version) in $k8s_dir"; fi
step "done in $(( $(date +%s) - start ))s. Run the tests: export PATH=\$(bash scripts/ensure-node.sh)/bin:\$PATH && npm test"
