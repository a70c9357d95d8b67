#!/bin/bash
# The cold path, checked on every machine: each cache and work-directory routine of the
# build and the lab, run with nothing cached, one entry and many (a developer's warm
# machine must not hide what a fresh one does). No VM, no kernel build: caches are
# prepared by hand where building would take minutes.
#  - scripts/lib/cache.sh cache_prune: a missing, an empty, a one-entry and a full cache;
#  - scripts/build-guest-kernel.sh's cached path with one result (the result alone, as
#    every fresh machine has after its first build) and with many (the two newest others
#    kept); trees of other source versions removed;
#  - the lab on a machine with no work directory: status, down, logs; the test images
#    (none, then cached); the guest image (none, then up to date, then a changed agent).
# The EROFS image cache's states are unit tests (runtime-core layers::gc).
# Prints PASS/FAIL/SKIP per check and "N passed, N failed"; exits non-zero on a failure.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
# shellcheck source=lib/check.sh
. "$REPO/tests/lib/check.sh"
# shellcheck source=../scripts/lib/cache.sh
. "$REPO/scripts/lib/cache.sh"

# entries DIR N: N entries x86_64-0..N-1, the higher the newer
entries() {
  local i
  mkdir -p "$1"
  for ((i = 0; i < $2; i++)); do
    mkdir -p "$1/x86_64-$i"
    touch -d "@$((1000000 + i))" "$1/x86_64-$i"
  done
}
left() { (cd "$1" 2> /dev/null && ls -1d -- * 2> /dev/null | LC_ALL=C sort | paste -sd' ') || true; }

# cache_prune
out=$(cache_prune "$T/none" 'x86_64-*' "" 2 && echo ok)
check prune-missing ok "$out"
mkdir -p "$T/empty"
out=$(cache_prune "$T/empty" 'x86_64-*' "$T/empty/x86_64-9" 2 && echo ok)
check prune-empty ok "$out"
entries "$T/one" 1
cache_prune "$T/one" 'x86_64-*' "$T/one/x86_64-0" 2
check prune-one-kept x86_64-0 "$(left "$T/one")"
cache_prune "$T/one" 'x86_64-*' "" 0
check prune-one-not-kept "" "$(left "$T/one")"
entries "$T/many" 6
cache_prune "$T/many" 'x86_64-*' "$T/many/x86_64-1" 2
check prune-many "x86_64-1 x86_64-4 x86_64-5" "$(left "$T/many")"

# build-guest-kernel.sh: its cached path, through the real script
BUILD=$REPO/scripts/build-guest-kernel.sh
if dpkg-query -W -f='${db:Status-Status}' linux-source-6.1 2> /dev/null | grep -qx installed; then
  name=$("$BUILD" --key)
  kc=$T/kernel
  # fake_result DIR: what a build leaves
  fake_result() { mkdir -p "$1"; echo vmlinuz > "$1/vmlinuz"; echo 6.1.0-vxn > "$1/release"; }
  fake_result "$kc/$name"
  out=$("$BUILD" --cache "$kc" 2> /dev/null) && rc=0 || rc=$?
  check kernel-one-result "0 $kc/$name/vmlinuz $name" "$rc $out $(left "$kc")"
  entries "$kc" 5
  touch -d @999 "$kc/$name"
  srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
  mkdir -p "$kc/src-$srcver" "$kc/obj-x86_64-$srcver" "$kc/src-0.old" "$kc/obj-x86_64-0.old"
  out=$("$BUILD" --cache "$kc" --out "$T/vmlinuz" 2> /dev/null) && rc=0 || rc=$?
  check kernel-many-results "0 $kc/$name/vmlinuz vmlinuz" "$rc $out $(cat "$T/vmlinuz" 2> /dev/null)"
  check kernel-many-pruned "$(printf '%s\n' "obj-x86_64-$srcver" "src-$srcver" x86_64-3 x86_64-4 "$name" | LC_ALL=C sort | paste -sd' ')" \
    "$(left "$kc")"
else
  echo "SKIP kernel-*: linux-source-6.1 is not installed (scripts/install-deps.sh installs it)"
fi

# the lab with no work directory (a fresh machine)
LAB=$REPO/tests/lab/lab
export VXN_LAB_WORK=$T/lab VXN_LAB_SSH_PORT=10999
out=$("$LAB" status 2> /dev/null) && rc=0 || rc=$?
check lab-status-fresh "1 down" "$rc $out"
"$LAB" down > /dev/null 2>&1 && rc=0 || rc=$?
check lab-down-fresh 0 "$rc"
"$LAB" logs > /dev/null 2>&1 && rc=0 || rc=$?
check lab-logs-fresh 0 "$rc"
if [ "$(id -u)" = 0 ] && [ -x /bin/busybox ] && command -v mkfs.ext4 > /dev/null; then
  "$LAB" test-image > /dev/null 2>&1 && rc=0 || rc=$?
  check lab-test-image-fresh "0 busybox.ext4 stamp vxn-test-docker.tar vxn-test.tar" "$rc $(left "$T/lab/test-image")"
  touch -d @1 "$T/lab/test-image/vxn-test.tar"
  "$LAB" test-image > /dev/null 2>&1 && rc=0 || rc=$?
  check lab-test-image-cached "0 @1" "$rc @$(stat -c %Y "$T/lab/test-image/vxn-test.tar")"
else
  echo "SKIP lab-test-image-*: needs root, busybox-static and e2fsprogs"
fi
if [ -n "${name:-}" ] && [ -x /bin/busybox ]; then
  # the guest image from a prepared kernel cache and a stand-in static /init
  export VXN_KERNEL_CACHE=$T/lab-kernel VXN_AGENT_BIN=$T/agent
  fake_result "$VXN_KERNEL_CACHE/$name"
  cp /bin/busybox "$T/agent"
  out=$("$LAB" guest-image 2>&1) && rc=0 || rc=$?
  check lab-guest-image-fresh "0 initramfs.cpio.gz vmlinuz" "$rc $(left "$T/lab/guest/vxn" | sed 's/ stamp//')"
  out=$("$LAB" guest-image 2>&1) && rc=0 || rc=$?
  check lab-guest-image-cached "0 up to date" "$rc $(grep -o 'up to date' <<< "$out" || true)"
  echo changed >> "$T/agent"
  out=$("$LAB" guest-image 2>&1) && rc=0 || rc=$?
  check lab-guest-image-rebuilt "0 " "$rc $(grep -o 'up to date' <<< "$out" || true)"
else
  echo "SKIP lab-guest-image-*: needs linux-source-6.1 and busybox-static"
fi

checks_done
