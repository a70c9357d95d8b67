# shellcheck shell=bash
# Arm lab: `push`, `e2e smoke` and `bench floor`. What runs in dom0 is tests/lab/arm/dom0-tests.sh.

# The aarch64 config dom0's vxn reads: only what differs from the built-in defaults (a newer
# config/config.toml may carry keys older binaries reject). max_memory_factor = 1: Xen on
# Arm has no populate-on-demand, so a domain whose maxmem is above its memory is not built
# ("xc_dom_boot_mem_init: can't allocate low memory", Xen: "Over-allocation for dN"). The
# shim writes maxmem = memory on Arm and defaults max_memory_factor to 1 there itself; the
# line stays for binaries from before that.
ARM_VXN_CONFIG="kernel = \"$DOM0_GUEST_DIR/vmlinuz\"
initramfs = \"$DOM0_GUEST_DIR/initramfs.cpio.gz\"
max_memory_factor = 1"

# arm_push: binaries, guest image, test image and the dom0 test script into dom0 (9p), the
# config, the test image imported, vxn's bridge up. Every boot starts from the built image
# (snapshot=on), so every push does all of it.
arm_push() {
  local b put=() stale t0
  [ -n "$(qemu_pid)" ] || die "the aarch64 lab is not up (run: lab --arch aarch64 up)"
  arm_strip_bins
  for b in "${ARM_HOST_BINS[@]}"; do put+=("$WORK/bin/$b" "/usr/local/bin/$b" 0755); done
  stale=$(find "$REPO_DIR" -path "$REPO_DIR/target" -prune -o \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) \
    -newer "$ARM_BIN_DIR/containerd-shim-vxn-v2" -print -quit 2>/dev/null || true)
  [ -z "$stale" ] || log "push: WARNING: sources are newer than $ARM_BIN_DIR/containerd-shim-vxn-v2 (e.g. ${stale#"$REPO_DIR"/}; lab --arch aarch64 cross)"
  arm_guest_image
  arm_test_image
  put+=("$GUEST/vmlinuz" "$DOM0_GUEST_DIR/vmlinuz" 0644
    "$GUEST/initramfs.cpio.gz" "$DOM0_GUEST_DIR/initramfs.cpio.gz" 0644
    "$GUEST/f0-initramfs.cpio.gz" "$DOM0_GUEST_DIR/f0-initramfs.cpio.gz" 0644
    "$TESTIMG/vxn-test.tar" /root/vxn-test.tar 0644 "$TESTIMG/busybox.ext4" /root/busybox.ext4 0644
    "$REPO_DIR/scripts/vctr" /usr/local/bin/vctr 0755
    "$ARM_DIR/dom0-tests.sh" /usr/local/bin/vxn-arm-dom0-tests.sh 0755)
  t0=$(now)
  dom0_put "${put[@]}"
  echo "lab: push.copy $(elapsed "$t0")s"
  t0=$(now)
  # shellcheck disable=SC2016 # expanded in dom0
  dom0 "set -e; mkdir -p /etc/vxn; printf '%s\n' '$ARM_VXN_CONFIG' > /etc/vxn/config.toml"'
    for i in $(seq 120); do ctr version > /dev/null 2>&1 && break; sleep 1; done
    ctr -n default images import /root/vxn-test.tar > /dev/null
    vxnctl network up > /dev/null' < /dev/null || die "push: setup in dom0 failed (config, image import, vxnctl network up)"
  echo "lab: push.setup $(elapsed "$t0")s"
  log "push: $ARM_BIN_DIR/{${ARM_HOST_BINS[*]}} -> /usr/local/bin; guest image -> $DOM0_GUEST_DIR; /etc/vxn/config.toml (aarch64, max_memory_factor = 1); docker.io/library/vxn-test:latest (arm64) imported"
}

# e2e [smoke]: the Arm lab's end-to-end check through containerd and ctr (the full
# tests/e2e suites are not run on Arm yet).
arm_e2e() {
  local set=${1:-smoke}
  [ "$set" = smoke ] || die "e2e: the aarch64 lab has only: smoke"
  arm_push
  dom0 "VXN_ARM_TIMEOUT=${VXN_ARM_TIMEOUT:-600} vxn-arm-dom0-tests.sh smoke" < /dev/null
}

# bench floor [RUNS]: F0, vxn and runc `ctr run --rm /bin/true` in turn in the same dom0.
arm_bench() {
  local what=${1:-floor}
  [ "$what" = floor ] || die "bench: the aarch64 lab has only: floor [RUNS]"
  [ $# -gt 0 ] && shift
  local runs=${1:-3}
  [[ $runs =~ ^[1-9][0-9]*$ ]] || die "bench floor: RUNS is a positive number, not '$runs'"
  arm_push
  dom0 "VXN_ARM_TIMEOUT=${VXN_ARM_TIMEOUT:-600} vxn-arm-dom0-tests.sh floor $runs" < /dev/null
}
