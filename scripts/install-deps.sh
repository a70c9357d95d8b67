#!/bin/bash
# Host packages the build and the unit/integration tests need (Debian 12).
# The Xen lab installs its own on top (tests/lab/lab deps).
set -euo pipefail
need=()
for pkg in busybox-static e2fsprogs; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "install-deps: a Rust toolchain (cargo) is required" >&2; exit 1; }
