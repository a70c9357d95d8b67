#!/bin/bash
# Register io.containerd.vxn.v2 with containerd without replacing the user's
# config: a drop-in under /etc/containerd/conf.d plus one `imports` line.
# Idempotent. Restart containerd afterwards for CRI to see the handler
# (`ctr run --runtime io.containerd.vxn.v2` works without this).
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)/config"
CONF=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
DROPIN_DIR=$(dirname "$CONF")/conf.d
install -d "$DROPIN_DIR" /etc/vxn
install -m 0644 "$SRC/containerd-vxn.toml" "$DROPIN_DIR/vxn.toml"
[ -f /etc/vxn/config.toml ] || install -m 0644 "$SRC/config.toml" /etc/vxn/config.toml
if [ ! -f "$CONF" ]; then
  printf 'version = 2\nimports = ["%s/*.toml"]\n' "$DROPIN_DIR" >"$CONF"
elif ! grep -q "^imports.*conf.d" "$CONF"; then
  if grep -q '^imports' "$CONF"; then
    echo "install-containerd-config: $CONF already has an imports line; add \"$DROPIN_DIR/*.toml\" to it" >&2
    exit 1
  fi
  # imports must come before any table: put it right after `version`.
  if grep -q '^version' "$CONF"; then
    sed -i "0,/^version.*/s||&\nimports = [\"$DROPIN_DIR/*.toml\"]|" "$CONF"
  else
    sed -i "1i version = 2\nimports = [\"$DROPIN_DIR/*.toml\"]" "$CONF"
  fi
fi
echo "containerd: $CONF imports $DROPIN_DIR/vxn.toml"
