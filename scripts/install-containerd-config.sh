#!/bin/bash
# Register CRI's runtime handler `vxn` with containerd without replacing the
# user's config: config/containerd-vxn.toml goes into /etc/containerd/config.toml
# between "vxn: begin/end" markers (an older block is replaced; idempotent).
# Restart containerd afterwards for CRI to see the handler
# (`ctr run --runtime io.containerd.vxn.v2` works without this).
# Env: CONTAINERD_CONFIG (/etc/containerd/config.toml), VXN_CONFIG_SRC (the
# directory holding containerd-vxn.toml and config.toml; default: ../config).
set -euo pipefail
SRC=${VXN_CONFIG_SRC:-"$(cd "$(dirname "$0")/.." && pwd)/config"}
CONF=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
BEGIN="# vxn: begin (scripts/install-containerd-config.sh)"
END="# vxn: end"
install -d /etc/vxn "$(dirname "$CONF")"
if [ ! -f /etc/vxn/config.toml ] && [ -f "$SRC/config.toml" ]; then
  install -m 0644 "$SRC/config.toml" /etc/vxn/config.toml
fi
[ -s "$CONF" ] || echo 'version = 2' > "$CONF"
if ! grep -q '^version *= *2' "$CONF"; then
  echo "install-containerd-config: $CONF is not a version 2 config; add $SRC/containerd-vxn.toml by hand" >&2
  exit 1
fi
tmp=$(mktemp "$CONF.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# the file without an older vxn block, then the block
awk -v b="$BEGIN" -v e="$END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' "$CONF" > "$tmp"
{
  echo "$BEGIN"
  grep -v '^#' "$SRC/containerd-vxn.toml" | sed '/^$/d'
  # containerd forgets its built-in runc entry once any runtime is configured: keep it
  if ! grep -q '^[[:space:]]*\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.runc\]' "$tmp"; then
    printf '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
  fi
  echo "$END"
} >> "$tmp"
if cmp -s "$tmp" "$CONF"; then
  echo "containerd: $CONF already has the vxn runtime"
  exit 0
fi
chmod --reference="$CONF" "$tmp"
mv -f "$tmp" "$CONF"
echo "containerd: $CONF has the vxn runtime (restart containerd for CRI to see it)"
