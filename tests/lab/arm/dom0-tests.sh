#!/bin/bash
# Runs INSIDE the Arm lab's dom0 (tests/lab/lab --arch aarch64 e2e smoke | bench floor N, which
# push it to /usr/local/bin/vxn-arm-dom0-tests.sh together with what it needs).
#   smoke       ctr run --rm through vxn: `echo hello` prints hello and exits 0, `sh -c 'exit 3'`
#               exits 3, and nothing is left (xl list only Domain-0, no state under
#               /run/vxn/default, no container or task); one PASS/FAIL line each, with seconds
#   floor [N]   N rounds (default 3), after one untimed warm-up round: F0 (a bare PVH domain:
#               vxn's kernel + a busybox /init that powers off, `xl create -F` until gone), vxn
#               `ctr run --rm IMG ID /bin/true` (no network) and runc's; medians, each run's
#               time and the shim's phases (containerd's journal). Never fails on speed.
# VXN_ARM_TIMEOUT (600 s): the most one run may take.
set -u
IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
DIR=/usr/share/vxn/aarch64
CTR=(ctr -n default)
VXN=(--runtime io.containerd.vxn.v2)
TO=${VXN_ARM_TIMEOUT:-600}
WORK=$(mktemp -d /tmp/vxn-arm-tests.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
FAILS=0

now() { date +%s.%N; }
since() { echo "$1 $(now)" | awk '{printf "%.1f\n", $2 - $1}'; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }
pass() { echo "PASS $1 ($2 s)"; }
fail() { echo "FAIL $1: $2"; FAILS=$((FAILS + 1)); }

# gone ID: the container and its task removed (after a failed run)
gone() {
  "${CTR[@]}" task kill -s KILL "$1" > /dev/null 2>&1
  "${CTR[@]}" task delete -f "$1" > /dev/null 2>&1
  "${CTR[@]}" container rm "$1" > /dev/null 2>&1
}

# phases ID SINCE: the shim's "timing:" lines for container ID since the epoch time SINCE,
# as "phase seconds, ..." (containerd's journal carries the shim's log)
phases() {
  journalctl -u containerd --no-pager -o cat --since "@${2%.*}" 2> /dev/null |
    awk -v id="id=$1 " 'index($0, id) && index($0, " timing: ") {
      sub(/.* timing: /, ""); n = split($0, f, " "); name = ""
      for (i = 1; i <= n && f[i] !~ /=/; i++) name = name (i > 1 ? " " : "") f[i]
      if (match($0, /took_ms=[0-9]+/)) { printf "%s%s %.1f", sep, name, substr($0, RSTART + 8, RLENGTH - 8) / 1000; sep = ", " }
    } END { print "" }'
}

# leftovers: what a finished `ctr run --rm` must not leave: domains besides Domain-0, shim
# state under /run/vxn/default, containers or tasks. Polls up to 30 s (teardown is async
# in xl's background processes); prints what is left.
leftovers() {
  local i left
  for i in $(seq 30); do
    left=$( { xl list 2>&1 | awk 'NR > 1 && $1 != "Domain-0" {print "domain " $1}'
              [ -d /run/vxn/default ] && find /run/vxn/default -mindepth 1 -maxdepth 1 -printf 'state %p\n'
              "${CTR[@]}" containers ls -q | sed 's/^/container /'
              "${CTR[@]}" tasks ls -q | sed 's/^/task /'; } 2>/dev/null)
    [ -n "$left" ] || return 0
    sleep 1
  done
  echo "$left" | tr '\n' ' '
}

smoke() {
  local id t0 out rc left
  echo "dom0: $(uname -m), Xen $(xl info | awk '/^xen_version/ {print $3}'), $(containerd --version | awk '{print $3}'), image $IMG"
  id=arm-smoke-echo-$$
  t0=$(now)
  out=$(timeout "$TO" "${CTR[@]}" run --rm "${VXN[@]}" "$IMG" "$id" /bin/echo hello 2> "$WORK/err" < /dev/null)
  rc=$?
  if [ "$rc" = 0 ] && [ "$out" = hello ]; then pass "echo_hello" "$(since "$t0")"
  else fail echo_hello "exit $rc, stdout '$out', stderr: $(tr '\n' ' ' < "$WORK/err" | cut -c1-400)"; gone "$id"; fi
  echo "  phases: $(phases "$id" "$t0")"
  id=arm-smoke-exit-$$
  t0=$(now)
  timeout "$TO" "${CTR[@]}" run --rm "${VXN[@]}" "$IMG" "$id" /bin/sh -c 'exit 3' > "$WORK/out" 2> "$WORK/err" < /dev/null
  rc=$?
  if [ "$rc" = 3 ]; then pass "exit_code_3" "$(since "$t0")"
  else fail exit_code_3 "exit $rc (want 3), stderr: $(tr '\n' ' ' < "$WORK/err" | cut -c1-400)"; gone "$id"; fi
  echo "  phases: $(phases "$id" "$t0")"
  t0=$(now)
  left=$(leftovers)
  if [ -z "$left" ]; then pass "nothing_left" "$(since "$t0")"; else fail nothing_left "$left"; fi
  echo "smoke: $((3 - FAILS))/3 passed"
  [ "$FAILS" = 0 ]
}

# f0 KEY: one bare domain, created and run to its end; its time appended to $WORK/KEY.
f0() {
  local cfg=$WORK/f0.cfg t0
  cat > "$cfg" <<EOF
name = "vxn-arm-f0"
type = "pvh"
kernel = "$DIR/vmlinuz"
ramdisk = "$DIR/f0-initramfs.cpio.gz"
extra = "console=hvc0 quiet rdinit=/init"
memory = 256
vcpus = 1
on_poweroff = "destroy"
on_crash = "destroy"
EOF
  t0=$(now)
  if timeout "$TO" xl create -F "$cfg" > "$WORK/f0.out" 2>&1 && grep -q 'reason code 0 ' "$WORK/f0.out"; then
    since "$t0" >> "$WORK/$1"
  else
    echo "F0: the domain did not power off cleanly: $(tr '\n' ' ' < "$WORK/f0.out")" >&2
    xl destroy vxn-arm-f0 > /dev/null 2>&1
  fi
}

# run KEY ID RUNTIME-ARGS...: one `ctr run --rm IMG ID /bin/true`; its time -> $WORK/KEY.
run() {
  local key=$1 id=$2 t0
  shift 2
  t0=$(now)
  if timeout "$TO" "${CTR[@]}" run --rm "$@" "$IMG" "$id" /bin/true < /dev/null > /dev/null 2> "$WORK/err"; then
    since "$t0" >> "$WORK/$key"
  else
    echo "$key run $id failed: $(tr '\n' ' ' < "$WORK/err" | cut -c1-400)" >&2
    gone "$id"
  fi
}

floor() {
  local runs=${1:-3} i t0 f0m vxm rcm
  local novif=("${VXN[@]}" --annotation vxn.network=none)
  echo "dom0: $(uname -m), Xen $(xl info | awk '/^xen_version/ {print $3}'), free $(xl info | awk '/^free_memory/ {print $3}') MiB; warm-up round (untimed)"
  f0 warm
  run warm "arm-floor-warm-vxn-$$" "${novif[@]}"
  run warm "arm-floor-warm-runc-$$"
  : > "$WORK/f0"; : > "$WORK/vxn"; : > "$WORK/runc"; : > "$WORK/phases"
  for ((i = 1; i <= runs; i++)); do
    f0 f0
    t0=$(now)
    run vxn "arm-floor-vxn-$i-$$" "${novif[@]}"
    echo "  vxn run $i: $(phases "arm-floor-vxn-$i-$$" "$t0")" >> "$WORK/phases"
    run runc "arm-floor-runc-$i-$$"
  done
  f0m=$(median < "$WORK/f0"); vxm=$(median < "$WORK/vxn"); rcm=$(median < "$WORK/runc")
  echo "floor (aarch64, TCG), median of $runs (s); each run in ():"
  printf '  %-48s %7s  (%s)\n' "F0: bare PVH domain, create to gone" "$f0m" "$(paste -sd' ' "$WORK/f0")" \
    "vxn: ctr run --rm IMG /bin/true (no network)" "$vxm" "$(paste -sd' ' "$WORK/vxn")" \
    "runc: ctr run --rm IMG /bin/true" "$rcm" "$(paste -sd' ' "$WORK/runc")"
  echo "  vxn/F0 $(echo "$f0m $vxm" | awk '$1 + 0 > 0 && $2 != "-" {printf "%.2f", $2 / $1}'), vxn/runc $(echo "$rcm $vxm" | awk '$1 + 0 > 0 && $2 != "-" {printf "%.2f", $2 / $1}')"
  echo "  runs: F0 $(wc -l < "$WORK/f0")/$runs, vxn $(wc -l < "$WORK/vxn")/$runs, runc $(wc -l < "$WORK/runc")/$runs"
  echo "  shim phases (s):"; cat "$WORK/phases"
}

case ${1:-} in
  smoke) smoke ;;
  floor) floor "${2:-3}" ;;
  *) echo "usage: $0 smoke | floor [RUNS]" >&2; exit 2 ;;
esac
