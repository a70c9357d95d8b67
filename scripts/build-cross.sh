#!/bin/bash
# Build every binary vxn ships for one architecture (default aarch64, cross from any other
# machine) and check what came out: containerd-shim-vxn-v2, vxn-shim-client, vxnctl and
# vxn-oci-runtime, linked against the target's glibc, and the static vxn-agent
# (scripts/build-agent.sh). vctr is a script and needs nothing. CI's `cross` phase runs it.
#
# usage: scripts/build-cross.sh [--arch aarch64|x86_64] [--release]
#   --release: the host binaries as users install them (the agent is always release).
#   Prints each binary's path. CARGO_TARGET_DIR defaults to target/cross: a build directory
#   of its own, so it never waits for (or holds up) a cargo working in target/.
#   The toolchain: scripts/install-deps.sh --cross.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=aarch64
profile=dev
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:?--arch aarch64|x86_64}; shift 2 ;;
    --release) profile=release; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-cross: unknown argument: $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=lib/cross.sh
. scripts/lib/cross.sh
target=$(cross_target "$arch")
cross_toolchain_check "$target"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cross}
HOST_BINS=(containerd-shim-vxn-v2 vxn-shim-client vxnctl vxn-oci-runtime)
args=(--locked --target "$target" --profile "$profile")
for b in "${HOST_BINS[@]}"; do args+=(--bin "$b"); done
echo "build-cross: ${HOST_BINS[*]} ($profile) and vxn-agent for $target" >&2
cargo build "${args[@]}" >&2
dir=$CARGO_TARGET_DIR/$target/$([ "$profile" = dev ] && echo debug || echo release)
for b in "${HOST_BINS[@]}"; do
  elf_check "$dir/$b" "$arch"
  echo "$dir/$b"
done
scripts/build-agent.sh --arch "$arch"
