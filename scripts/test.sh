#!/bin/bash
# Run every test of the project; each phase prints "test: PHASE Ns".
#   deps     host packages (scripts/install-deps.sh --cross: aarch64's cross toolchain too)
#   fmt, clippy
#   structure  no import circle in a crate, runtime-core's model never names Xen
#            (scripts/import-graph.py): 1 s
#   scripts  vctr's arguments, install-engine-config.sh's merges (tests/engine-scripts-test.sh): 1 s
#   cross-scripts  what the cross-builds decide with: targets, ELF machine and static checks,
#            a missing toolchain named (tests/cross-test.sh): 1 s
#   caches   every cache and work-directory routine with nothing, one entry and many
#            (tests/cache-test.sh): seconds
#   kernel-config  the guest kernel fragments and the check a kernel build makes of them
#            (tests/kernel-config-test.sh): 1 s
#   unit     cargo test: unit and integration tests (the agent's need root)
#   vmless   the shim's end-to-end suites through a private containerd on the test-only
#            process backend, and a hostile agent (tests/e2e/vmless.sh): minutes, no VM;
#            under Debian's containerd 1.6, then the shim suite under 2.3.4
#            (vmless-containerd2)
#   fuzz     every fuzz target, VXN_FUZZ_SECS each (default 30)
#   cross    every binary vxn ships, built for aarch64 and checked (scripts/build-cross.sh), and
#            the arm64 guest kernel's fragments resolved by Kconfig (--config-only):
#            from the unit phase's end on, niced, in the background (the VM-less and fuzz
#            phases leave CPU idle); the phase waits for it before the lab.
#            VXN_CROSS=0 skips.
#   lab      real Xen 4.17 in QEMU: the chosen e2e set under containerd 1.6 and a set under
#            2.3.4 (tests/lab/lab ci); VXN_LAB=0 skips.
#            Its host packages, guest kernel (scripts/build-guest-kernel.sh) and dom0 image
#            start building in the background after the deps phase.
# VXN_VMLESS=0, VXN_FUZZ=0 and VXN_CROSS=0 skip those phases.
set -euo pipefail
cd "$(dirname "$0")/.."
t_all=$SECONDS
phase() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  echo "test: $name $((SECONDS - t0))s"
}

if [ "${VXN_CROSS:-1}" != 0 ]; then
  phase deps scripts/install-deps.sh --cross
else
  phase deps scripts/install-deps.sh
fi
# The lab's slow preparations start now, niced, in the background: its host packages, then
# its guest kernel (scripts/build-guest-kernel.sh) beside its dom0 image (lab build). They
# take the CPU the cargo phases leave idle (niced); the lab phase finds them done, or waits for
# them (both hold a lock while they build).
if [ "${VXN_LAB:-1}" != 0 ] && [ "$(id -u)" = 0 ]; then
  lab_work=${VXN_LAB_WORK:-/var/tmp/vxn-lab}
  kcache=${VXN_KERNEL_CACHE:-$lab_work/kernel}
  mkdir -p "$kcache" "$lab_work"
  echo "test: preparing the lab in the background (logs: $lab_work/prepare.log, $kcache/background.log)"
  set -m  # its own process group, so that a failed run can stop all of it
  (
    renice -n 10 -p "$BASHPID" > /dev/null || true
    tests/lab/lab deps || exit 1
    if [ "${VXN_GUEST_KERNEL:-vxn}" = vxn ]; then
      scripts/build-guest-kernel.sh --cache "$kcache" > "$kcache/background.log" 2>&1 &
    fi
    tests/lab/lab build
    wait
  ) > "$lab_work/prepare.log" 2>&1 < /dev/null &
  lab_prep=$!
  set +m
fi
# background_stop: a run that ends early stops what it started in the background (a
# finished one finds it done: its phase waited).
background_stop() {
  local pid
  for pid in ${lab_prep:-} ${cross_build:-}; do kill -- -"$pid" 2> /dev/null || true; done
}
trap background_stop EXIT
# The lab needs ~12 GB (targets, guest kernel, dom0 tree and image): say what there is.
df -h --output=avail,target . /var/tmp 2>/dev/null | sed 's/^/test: disk: /' || true
phase fmt cargo fmt --all --check
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# no import circle between the files or the folders of a crate; runtime-core's model and
# its Hypervisor seam never name the Xen backend (docs/architecture.md)
phase structure python3 scripts/import-graph.py --check --forbid 'model->xen' --forbid 'hypervisor->xen' \
  runtime-core/src shim/src oci-runtime/src guest-agent/src wire/src vchan/src
phase scripts tests/engine-scripts-test.sh
phase cross-scripts tests/cross-test.sh
phase caches tests/cache-test.sh
phase kernel-config tests/kernel-config-test.sh
if [ "$(id -u)" != 0 ]; then
  echo "test: not root: the agent's integration tests and the VM-less tier will be skipped" >&2
fi
phase unit cargo test --workspace --locked
if [ "${VXN_CROSS:-1}" != 0 ] && ! (. scripts/lib/cross.sh && cross_toolchain_check aarch64-unknown-linux-gnu); then
  echo "test: cross SKIPPED: no aarch64 toolchain (scripts/install-deps.sh --cross)"
elif [ "${VXN_CROSS:-1}" != 0 ]; then
  cross_log=target/cross-build.log
  echo "test: cross-building for aarch64 in the background (log: $cross_log)"
  set -m
  ( renice -n 10 -p "$BASHPID" > /dev/null || true
    t0=$SECONDS
    scripts/build-cross.sh --arch aarch64 &&
      scripts/build-guest-kernel.sh --arch aarch64 --config-only --cache "${VXN_KERNEL_CACHE:-${VXN_LAB_WORK:-/var/tmp/vxn-lab}/kernel}" &&
      echo "build-cross: done in $((SECONDS - t0))s" ) > "$cross_log" 2>&1 < /dev/null &
  cross_build=$!
  set +m
fi
# cross_wait: the aarch64 build's verdict (its log's tail when it failed).
cross_wait() {
  if wait "$cross_build"; then
    grep -h '^build-cross: done' "$cross_log" || true
  else
    tail -40 "$cross_log" >&2
    echo "test: the aarch64 cross-build failed (log: $cross_log)" >&2
    return 1
  fi
}
if [ "${VXN_VMLESS:-1}" != 0 ] && [ "$(id -u)" = 0 ]; then
  phase build cargo build --workspace --locked
  phase vmless tests/e2e/vmless.sh
  # the shim suite under containerd 2.3.4 (bootstrap protocol, task API v3), from the
  # pinned test tools (scripts/lib/tools.sh); the oci and hostile suites do not go
  # through containerd's side of the shim, so once is enough
  if (. scripts/lib/tools.sh && tools_available "${CONTAINERD2_TOOLS[@]}"); then
    phase vmless-containerd2 env VXN_CONTAINERD=2 tests/e2e/vmless.sh shim
  else
    echo "test: vmless-containerd2 SKIPPED: containerd 2.x test tools not found (VXN_TOOLS_DIR)"
  fi
fi
if [ "${VXN_FUZZ:-1}" != 0 ]; then
  phase fuzz scripts/fuzz.sh "${VXN_FUZZ_SECS:-30}"
fi
# (before the lab: the lab's TCG wants both cores, and a build beside it slows it 2x)
if [ -n "${cross_build:-}" ]; then
  phase cross cross_wait
fi
if [ "${VXN_LAB:-1}" != 0 ]; then
  phase lab tests/lab/lab ci
fi
echo "test: total $((SECONDS - t_all))s"
