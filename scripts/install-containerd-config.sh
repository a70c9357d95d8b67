#!/bin/bash
# Register CRI's runtime handler `vxn` with containerd without replacing the user's
# config: config/containerd-vxn.toml goes into /etc/containerd/config.toml between
# "vxn: begin/end" markers (an older block is replaced; idempotent; the rest is kept).
# Both config formats: version 2 (containerd 1.6/1.7, plugin io.containerd.grpc.v1.cri;
# containerd 2.x reads it too) and version 3 (containerd 2.x, io.containerd.cri.v1.runtime).
# A missing or empty file gets the format of the installed containerd.
# Restart containerd afterwards for CRI to see the handler
# (`ctr run --runtime io.containerd.vxn.v2` works without this).
# Env: CONTAINERD_CONFIG (/etc/containerd/config.toml), VXN_CONFIG_SRC (the directory
# holding containerd-vxn.toml and config.toml; default: ../config), VXN_ETC (/etc/vxn),
# CONTAINERD (the containerd binary asked for its version: containerd on PATH).
set -euo pipefail
SRC=${VXN_CONFIG_SRC:-"$(cd "$(dirname "$0")/.." && pwd)/config"}
CONF=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
ETC=${VXN_ETC:-/etc/vxn}
BEGIN="# vxn: begin (scripts/install-containerd-config.sh)"
END="# vxn: end"
V2_CRI='plugins."io.containerd.grpc.v1.cri".containerd'
V3_CRI='plugins."io.containerd.cri.v1.runtime".containerd'
say() { echo "install-containerd-config: $*" >&2; }

install -d "$ETC" "$(dirname "$CONF")"
if [ ! -f "$ETC/config.toml" ] && [ -f "$SRC/config.toml" ]; then
  install -m 0644 "$SRC/config.toml" "$ETC/config.toml"
fi
if [ ! -s "$CONF" ]; then
  major=$("${CONTAINERD:-containerd}" --version 2>/dev/null | awk '{sub(/^v/, "", $3); split($3, v, "."); print v[1]}' || true)
  if [ "${major:-1}" -ge 2 ] 2>/dev/null; then echo 'version = 3' > "$CONF"; else echo 'version = 2' > "$CONF"; fi
fi
version=$(awk -F= '/^[[:space:]]*version[[:space:]]*=/ {gsub(/[[:space:]]/, "", $2); print $2; exit}' "$CONF")
case $version in
  2) cri=$V2_CRI ;;
  3) cri=$V3_CRI ;;
  *) say "$CONF is a version ${version:-1} config (vxn writes version 2 or 3); add $SRC/containerd-vxn.toml by hand"
     exit 1 ;;
esac
tmp=$(mktemp "$CONF.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# the file without an older vxn block, then the block
awk -v b="$BEGIN" -v e="$END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' "$CONF" > "$tmp"
{
  echo "$BEGIN"
  # the source is written for version 2; version 3 names the CRI runtime plugin anew
  grep -v '^#' "$SRC/containerd-vxn.toml" | sed '/^$/d' | sed "s/$(printf '%s' "$V2_CRI" | sed 's/[.[\"]/\\&/g')/$cri/"
  # containerd 1.x forgets its built-in runc entry once any runtime is configured: keep
  # it (2.x keeps it by itself)
  if [ "$version" = 2 ] &&
    ! grep -q '^[[:space:]]*\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.runc\]' "$tmp"; then
    printf '[%s.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n' "$V2_CRI"
  fi
  echo "$END"
} >> "$tmp"
if cmp -s "$tmp" "$CONF"; then
  echo "containerd: $CONF already has the vxn runtime"
  exit 0
fi
chmod --reference="$CONF" "$tmp"
mv -f "$tmp" "$CONF"
echo "containerd: $CONF has the vxn runtime (config version $version; restart containerd for CRI to see it)"
