#!/usr/bin/env bash
# Smoke test, run on the host against a lab that is up (tests/lab/lab up): boots real DomUs
# from the vxn guest image with `vxnctl xen-run` inside dom0.
#   1. /bin/echo hello            -> stdout "hello", exit 0
#   2. /bin/sh -c 'exit 5'        -> exit 5
#   3. afterwards `xl list` shows no smoke-* domain
# Ends with "N passed, M failed"; exit status 1 if anything failed.
# Env: VXNCTL_BIN (default <repo>/target/release/vxnctl), SMOKE_TIMEOUT (per run, 300 s),
# SMOKE_CASES (default "echo exit5"; `lab ci` runs "echo": its e2e set covers exit codes).
set -uo pipefail
LAB_DIR=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
REPO_DIR=$(cd "$LAB_DIR/../.." && pwd)
# shellcheck source=lib/common.sh
. "$LAB_DIR/lib/common.sh"
# shellcheck source=lib/testimg.sh
. "$LAB_DIR/lib/testimg.sh"

LAB=$LAB_DIR/lab
VXNCTL=${VXNCTL_BIN:-$REPO_DIR/target/release/vxnctl}
TIMEOUT=${SMOKE_TIMEOUT:-300}
PASSED=0 FAILED=0
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT

pass() { echo "PASS: $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $1"; FAILED=$((FAILED + 1)); }
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" = 0 ]; exit $?; }

# setup: vxnctl, the guest image and the busybox rootfs disk into dom0.
setup() {
  [ -n "$(qemu_pid)" ] || { fail "setup: lab is not up (tests/lab/lab up)"; return 1; }
  [ -x "$VXNCTL" ] || { fail "setup: $VXNCTL not built (cargo build --release --bin vxnctl)"; return 1; }
  [ -f "$GUEST/initramfs.cpio.gz" ] || { fail "setup: no guest image (tests/lab/lab guest-image)"; return 1; }
  build_test_images
  ( dom0_put "$VXNCTL" /usr/local/bin/vxnctl 0755 \
      "$GUEST/vmlinuz" "$DOM0_GUEST_DIR/vmlinuz" 0644 \
      "$GUEST/initramfs.cpio.gz" "$DOM0_GUEST_DIR/initramfs.cpio.gz" 0644 \
      "$TESTIMG/busybox.ext4" /root/busybox.ext4 0644 ) || { fail "setup: copy into dom0"; return 1; }
}

# xen_run NAME ARGV...: vxnctl xen-run in dom0; stdout to stdout, stderr to $ERR.
xen_run() {
  local name=smoke-$1
  shift
  timeout "$TIMEOUT" "$LAB" ssh vxnctl xen-run --name "$name" \
    --kernel "$DOM0_GUEST_DIR/vmlinuz" --initramfs "$DOM0_GUEST_DIR/initramfs.cpio.gz" \
    --rootfs-disk /root/busybox.ext4 --memory 128 --timeout 120 -- "$@" 2> "$ERR" < /dev/null
}

# explain NAME: what went wrong (vxnctl's stderr, the guest console) for a failed case.
explain() {
  echo "  --- vxnctl stderr:"; sed 's/^/  | /' "$ERR" | tail -20
  echo "  --- guest console (hvc0):"
  "$LAB" ssh "tail -n 30 /var/log/xen/console/guest-smoke-$1.log 2>/dev/null | tr -d '\r'" < /dev/null | sed 's/^/  | /'
}

timing() { grep -h '^vxnctl: timing' "$ERR" | sed 's/^/  /' || true; }

case_echo() {
  local out rc
  out=$(xen_run echo /bin/echo hello); rc=$?
  timing
  if [ "$rc" = 0 ] && [ "$out" = hello ]; then pass "xen-run /bin/echo hello -> stdout 'hello', exit 0"
  else fail "xen-run /bin/echo hello: exit $rc, stdout '$out' (want 'hello', exit 0)"; explain echo; fi
}

case_exit5() {
  local out rc
  out=$(xen_run exit5 /bin/sh -c 'exit 5'); rc=$?
  timing
  if [ "$rc" = 5 ]; then pass "xen-run /bin/sh -c 'exit 5' -> exit 5"
  else fail "xen-run /bin/sh -c 'exit 5': exit $rc (want 5), stdout '$out'"; explain exit5; fi
}

# case_clean: no DomU of the smoke test may outlive its xen-run (other domains, e.g. containers
# a developer left running in a lab that was already up, are not ours to judge). Leftovers
# are destroyed so later tests start clean.
case_clean() {
  local doms
  doms=$("$LAB" ssh "xl list | awk 'NR > 1 && \$1 ~ /^smoke-/ { print \$1 }'" < /dev/null)
  if [ -z "$doms" ]; then pass "xl list shows no smoke-* domain"; return; fi
  fail "xl list shows leftover domains: $(echo "$doms" | tr '\n' ' ')"
  "$LAB" ssh "xl list | awk 'NR > 1 && \$1 ~ /^smoke-/ { print \$1 }' | xargs -r -n1 xl destroy" < /dev/null || true
}

setup || finish
for c in ${SMOKE_CASES:-echo exit5}; do "case_$c"; done
case_clean
finish
