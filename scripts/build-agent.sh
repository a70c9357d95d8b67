#!/bin/bash
# Build the guest agent as a fully static executable (no loader, no libc in
# the initramfs). glibc's static libc is used: no musl target can be
# installed here, and the agent never calls NSS (users are resolved from the
# container's own /etc/passwd). Prints the binary's path.
#
# usage: scripts/build-agent.sh [--arch x86_64|aarch64]
#   aarch64 on another machine cross-builds (scripts/lib/cross.sh: Debian's cross gcc and
#   rustup's target; .cargo/config.toml names the linker).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=x86_64
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:?--arch x86_64|aarch64}; shift 2 ;;
    *) echo "build-agent: unknown argument: $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=lib/cross.sh
. scripts/lib/cross.sh
TARGET=$(cross_target "$arch")
cross_toolchain_check "$TARGET"
# --target keeps these flags off build scripts and proc-macros.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked --target "$TARGET" -p vxn-agent >&2
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/vxn-agent"
# (readelf, not ldd: ldd cannot read a foreign machine's binary and says nothing)
elf_check "$BIN" "$arch" static || exit 1
echo "$BIN"
