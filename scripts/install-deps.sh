#!/bin/bash
# Host packages the build and the tests need (Debian 12): busybox-static and
# e2fsprogs and erofs-utils for the rootfs tests; containerd, runc and util-linux's `script`
# for the VM-less end-to-end tier (containerd + the process backend, and runc
# as the yardstick); iproute2 for the agent's network tests (a veth into its netns);
# protobuf-compiler for the CRI test client's generated API (k8s-cri runs protoc);
# linux-source-6.1 and the kernel's build tools for vxn's guest kernel (the lab's, built
# from the unit phase on; tests/cache-test.sh checks its cache); cpio, which packs the lab's
# guest image (tests/cache-test.sh builds one before the lab installs its own packages).
# The Xen lab installs its own on top (tests/lab/lab deps).
# --cross [ARCH]: also what building vxn for ARCH (default aarch64) takes on this machine:
# Debian's cross gcc and libc, and Rust's standard library for the target (rustup's; Debian's
# rustc is older than the workspace's rust-version). scripts/build-cross.sh uses them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/cross.sh
. scripts/lib/cross.sh
cross=
case ${1:-} in
  --cross) cross=$(cross_target "${2:-aarch64}") ;;
  '') ;;
  *) echo "install-deps: unknown argument: $1 (--cross [ARCH])" >&2; exit 2 ;;
esac
need=()
# (word splitting wanted: cross_packages lists names)
# shellcheck disable=SC2046
for pkg in busybox-static e2fsprogs erofs-utils containerd runc util-linux python3 iproute2 protobuf-compiler cpio \
  linux-source-6.1 make gcc bc flex bison libelf-dev libc6-dev xz-utils binutils \
  $([ -z "$cross" ] || cross_packages "$cross"); do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Never start the distribution's containerd service: tests run their own.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}"
  [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
command -v cargo >/dev/null || { echo "install-deps: a Rust toolchain (cargo) is required" >&2; exit 1; }
# (a machine that cannot add the target says so and goes on: the cross-build then says
# it is skipped, as the tests do for any tool a machine lacks)
if [ -n "$cross" ] && ! cross_toolchain_check "$cross" 2> /dev/null; then
  if ! command -v rustup > /dev/null || ! rustup target add "$cross"; then
    echo "install-deps: warning: Rust's std for $cross could not be added (no rustup, or no network)" >&2
  fi
fi
