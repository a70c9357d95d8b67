#!/bin/bash
# Build the guest agent as a fully static executable (no loader, no libc in
# the initramfs). glibc's static libc is used: no musl target can be
# installed here, and the agent never calls NSS (users are resolved from the
# container's own /etc/passwd). Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
# --target keeps these flags off build scripts and proc-macros.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked --target "$TARGET" -p vxn-agent >&2
BIN="target/$TARGET/release/vxn-agent"
if ldd "$BIN" >/dev/null 2>&1; then
  echo "build-agent: $BIN is dynamically linked" >&2
  exit 1
fi
echo "$BIN"
