#!/usr/bin/env bash
# Installs checkov (static analysis of Kubernetes manifests, from PyPI) into a venv cached by
# version; prints the path of its `checkov` binary. A second run is a no-op. Used by
# scripts/checkov-scan.ts (builder Job and rendered chart) and its test.
set -euo pipefail
checkov_version=3.3.30
out="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/checkov-$checkov_version"
# The venv's scripts name their interpreter by absolute path, so it is built in place; a stamp
# written last marks it complete (an interrupted install is redone).
if [ ! -f "$out/installed" ]; then
  command -v python3 >/dev/null || { echo "install-checkov: python3 is needed (apt-get install python3 python3-venv)" >&2; exit 1; }
  echo "install-checkov: installing checkov $checkov_version into $out/venv" >&2
  rm -rf "$out"
  python3 -m venv "$out/venv" || { echo "install-checkov: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$checkov_version" >&2
  "$out/venv/bin/checkov" --version >/dev/null
  touch "$out/installed"
fi
echo "$out/venv/bin/checkov"
