# shellcheck shell=bash
# Arm lab: what runs in dom0, for aarch64. The binaries (`cross`: scripts/build-cross.sh), the
# DomU boot image (`guest-image`: vxn's arm64 kernel + an initramfs whose /init is the static
# aarch64 agent, lib/guest.sh's contract and packer), the F0 floor's initramfs and the busybox
# test image (`test-image`: lib/testimg.sh with arm64 busybox and "architecture":"arm64").

ARM_TARGET=aarch64-unknown-linux-gnu
# build-cross.sh's own default build dir unless CARGO_TARGET_DIR says otherwise
ARM_CARGO_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target/cross}
# dev (build-cross.sh's default, as CI's cross phase builds) or release
ARM_PROFILE=${VXN_LAB_PROFILE:-dev}
case $ARM_PROFILE in
  dev) ARM_BIN_DIR=$ARM_CARGO_DIR/$ARM_TARGET/debug ;;
  release) ARM_BIN_DIR=$ARM_CARGO_DIR/$ARM_TARGET/release ;;
  *) die "VXN_LAB_PROFILE: dev or release, not '$ARM_PROFILE'" ;;
esac
ARM_AGENT=${VXN_LAB_ARM_AGENT:-$ARM_CARGO_DIR/$ARM_TARGET/release/vxn-agent}
ARM_HOST_BINS=(containerd-shim-vxn-v2 vxnctl vxn-oci-runtime vxn-shim-client)

arm_cross() {
  local rel=()
  [ "$ARM_PROFILE" = release ] && rel=(--release)
  log "cross: scripts/build-cross.sh --arch aarch64 ${rel[*]} into $ARM_CARGO_DIR"
  (cd "$REPO_DIR" && CARGO_TARGET_DIR=$ARM_CARGO_DIR nice -n 19 scripts/build-cross.sh --arch aarch64 "${rel[@]}") >&2 ||
    die "scripts/build-cross.sh --arch aarch64 failed (toolchain: scripts/install-deps.sh --cross)"
}

# arm_agent: the static aarch64 agent, rebuilt (scripts/build-agent.sh) when missing or
# older than its sources, unless VXN_LAB_ARM_AGENT names a prebuilt one.
arm_agent() {
  if [ -z "${VXN_LAB_ARM_AGENT:-}" ] && { [ ! -f "$ARM_AGENT" ] || agent_sources_newer "$ARM_AGENT"; }; then
    log "guest-image: the static aarch64 vxn-agent is missing or older than its sources: scripts/build-agent.sh --arch aarch64"
    (cd "$REPO_DIR" && CARGO_TARGET_DIR=$ARM_CARGO_DIR nice -n 19 scripts/build-agent.sh --arch aarch64) > /dev/null ||
      die "scripts/build-agent.sh --arch aarch64 failed"
  fi
  [ -f "$ARM_AGENT" ] || die "no aarch64 agent at $ARM_AGENT"
  # (readelf, not ldd: ldd cannot read a foreign binary) no libc in the initramfs
  if readelf -l "$ARM_AGENT" 2> /dev/null | grep -q 'INTERP'; then die "$ARM_AGENT is dynamically linked"; fi
  echo "$ARM_AGENT"
}

# arm_kernel: vxn's arm64 kernel (Image.gz; libxc gunzips it for an Arm DomU), cached in
# VXN_KERNEL_CACHE or $WORK/kernel (~10 min cold on 2 cores; `build` seeds it, VXN_LAB_ARM_SEED).
arm_kernel() {
  nice -n 19 "$REPO_DIR/scripts/build-guest-kernel.sh" --arch aarch64 --cache "${VXN_KERNEL_CACHE:-$WORK/kernel}" ||
    die "vxn's arm64 guest kernel did not build (scripts/build-guest-kernel.sh --arch aarch64)"
}

arm_guest_image() {
  local agent kernel kver want
  agent=$(arm_agent)
  kernel=$(arm_kernel)
  kver=$(cat "$(dirname "$kernel")/release")
  want=$(hash_of "$agent" "$kernel" "$kver" "$LAB_DIR/lib/guest.sh" "$ARM_DIR/images.sh")
  mkdir -p "$GUEST"
  if [ -f "$GUEST/initramfs.cpio.gz" ] && [ "$(cat "$GUEST/stamp" 2>/dev/null)" = "$want" ]; then
    log "guest-image: up to date"
  else
    cp "$kernel" "$GUEST/vmlinuz"
    build_initramfs "$agent" "$kver" "" "$GUEST/initramfs.cpio.gz"   # lib/guest.sh: no modules
    echo "$want" > "$GUEST/stamp"
  fi
  arm_f0_image
  log "guest-image: kernel $kver, vmlinuz $(stat -c %s "$GUEST/vmlinuz") bytes, initramfs.cpio.gz $(stat -c %s "$GUEST/initramfs.cpio.gz") bytes (agent $(stat -c %s "$agent") bytes)"
}

# arm_f0_image: the raw-Xen floor's initramfs (as lib/guest.sh's f0_image): dom0's arm64
# busybox and an /init that prints and powers off.
arm_f0_image() {
  local tree=$GUEST/f0-tree
  [ -x "$ROOTFS/bin/busybox" ] || die "no arm64 busybox in $ROOTFS (run: lab --arch aarch64 build)"
  rm -rf "$tree" && mkdir -p "$tree/bin"
  cp "$ROOTFS/bin/busybox" "$tree/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox echo vxn-f0-up\n/bin/busybox poweroff -f\n' > "$tree/init"
  chmod 0755 "$tree/init"
  pack_cpio "$tree" "$GUEST/f0-initramfs.cpio.gz"
}

# arm_test_image: $TESTIMG/{vxn-test.tar,busybox.ext4} for arm64. lib/testimg.sh writes amd64
# into its image configs and index; a copy with arm64 there is sourced, with dom0's arm64
# busybox (its --list runs on the host through the qemu-aarch64 binfmt).
arm_test_image() {
  local src=$LAB_DIR/lib/testimg.sh patched=$WORK/testimg-arm64.sh n
  [ -x "$ROOTFS/bin/busybox" ] || die "no arm64 busybox in $ROOTFS (run: lab --arch aarch64 build)"
  arm_binfmt
  n=$(grep -o '"architecture":"[a-z0-9]*"' "$src" | grep -vc '"amd64"' || true)
  [ "$n" = 0 ] || die "lib/testimg.sh names an architecture other than amd64: update arm_test_image"
  sed 's/"architecture":"amd64"/"architecture":"arm64"/g' "$src" > "$patched"
  (
    # shellcheck disable=SC2034 # read by the sourced testimg.sh
    VXN_BUSYBOX=$ROOTFS/bin/busybox
    # shellcheck source=/dev/null
    . "$patched"
    build_test_images
  )
  log "test-image: $TESTIMG/vxn-test.tar ($(stat -c %s "$TESTIMG/vxn-test.tar") bytes, arm64), $TESTIMG/busybox.ext4"
}

# arm_strip_bins: the host binaries to push, in $WORK/bin: without their debug info when
# aarch64-linux-gnu-strip is here (a dev build is ~410 MB with it, and 9p into the TCG dom0
# moves ~7 MB/s); symbols stay, so backtraces keep their names.
arm_strip_bins() {
  local b strip=aarch64-linux-gnu-strip
  mkdir -p "$WORK/bin"
  command -v "$strip" > /dev/null || strip=
  for b in "${ARM_HOST_BINS[@]}"; do
    [ -f "$ARM_BIN_DIR/$b" ] || die "$ARM_BIN_DIR/$b not built (run: lab --arch aarch64 cross)"
    if [ -n "$strip" ]; then "$strip" --strip-debug -o "$WORK/bin/$b" "$ARM_BIN_DIR/$b"
    else cp "$ARM_BIN_DIR/$b" "$WORK/bin/$b"; fi
  done
}
