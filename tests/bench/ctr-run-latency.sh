#!/bin/bash
# Benchmark, run INSIDE a Xen dom0 with containerd (the lab: tests/lab/lab bench).
# Median wall time of `ctr run --rm IMG ID /bin/true` with the vxn runtime and with runc,
# the median of 20 `ctr task exec ... /bin/true` into a running container (vxn and runc),
# the split of the vxn time into phases (from the shim's "timing:" log lines in containerd's
# journal), and the memory of one shim with one container running, vxn and runc.
# Usage: ctr-run-latency.sh [RUNS]   (default 10). Prints numbers only; never fails on speed.
set -u
RUNS=${1:-10}
IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
VXN=io.containerd.vxn.v2
RUNC=io.containerd.runc.v2
CTR=(ctr -n default)
WORK=$(mktemp -d /tmp/vxn-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }

# time_runs RUNTIME PREFIX: RUNS timed `ctr run --rm`, one wall time (s) per line in $WORK/PREFIX.
time_runs() {
  local rt=$1 prefix=$2 i t0 t1
  : >"$WORK/$prefix"
  for ((i = 1; i <= RUNS; i++)); do
    t0=$(now)
    "${CTR[@]}" run --rm --runtime "$rt" "$IMG" "bench-$prefix-$i" /bin/true </dev/null >/dev/null 2>&1 ||
      echo "run $prefix-$i failed" >&2
    t1=$(now)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}' >>"$WORK/$prefix"
    echo "$t0" >"$WORK/$prefix.start.$i"
  done
}

# phase NAME PATTERN: median of the took_ms of the shim log lines matching PATTERN, in s.
phase() {
  local name=$1 pattern=$2
  grep -h "bench-vxn-" "$WORK/journal" | grep -- "$pattern" | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p' |
    awk '{printf "%.3f\n", $1 / 1000}' | median | xargs printf '  %-34s %s s\n' "$name"
}

# shim_start: per run, from `ctr run` to the shim's "Shim successfully started" line.
shim_start() {
  local i t0 ts
  for ((i = 1; i <= RUNS; i++)); do
    t0=$(cat "$WORK/vxn.start.$i")
    ts=$(grep -h "id=bench-vxn-$i " "$WORK/journal" | grep -m1 'Shim successfully started' |
      sed -n 's/.*time="\([^"]*\)".*/\1/p')
    [ -n "$ts" ] && echo "$t0 $(date -d "$ts" +%s.%N)" | awk '{printf "%.3f\n", $2 - $1}'
  done | median | xargs printf '  %-34s %s s\n' "containerd + shim start"
}

# shim_memory RUNTIME BINARY: VmRSS and RssAnon of the shim serving one running container.
shim_memory() {
  local rt=$1 bin=$2 id=bench-mem-$RANDOM pid
  "${CTR[@]}" run -d --runtime "$rt" "$IMG" "$id" sleep 1000 >/dev/null || return
  sleep 3
  pid=$(pgrep -f "$bin .*-id $id( |$)" | head -1)
  if [ -n "$pid" ]; then
    printf '  %-34s %s\n' "$bin" "$(grep -E '^(VmRSS|RssAnon)' "/proc/$pid/status" | tr -s ' \t' ' ' | paste -sd, -)"
  fi
  "${CTR[@]}" task kill -s KILL "$id" >/dev/null 2>&1
  sleep 2
  "${CTR[@]}" task delete "$id" >/dev/null 2>&1
  "${CTR[@]}" container rm "$id" >/dev/null 2>&1
}

# exec_latency RUNTIME: median wall time of 20 `ctr task exec ID /bin/true` in one container.
exec_latency() {
  local rt=$1 id=bench-exec-$RANDOM i t0 t1
  "${CTR[@]}" run -d --runtime "$rt" "$IMG" "$id" sleep 1000 >/dev/null || return
  sleep 2
  for ((i = 1; i <= 20; i++)); do
    t0=$(now)
    "${CTR[@]}" task exec --exec-id "e$i" "$id" /bin/true </dev/null >/dev/null 2>&1 || echo "exec $i failed" >&2
    t1=$(now)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
  done | median | xargs printf '  %-34s %s s\n' "$rt"
  "${CTR[@]}" task kill -s KILL "$id" >/dev/null 2>&1
  sleep 2
  "${CTR[@]}" task delete "$id" >/dev/null 2>&1
  "${CTR[@]}" container rm "$id" >/dev/null 2>&1
}

since=$(date '+%Y-%m-%d %H:%M:%S')
"${CTR[@]}" run --rm --runtime "$VXN" "$IMG" bench-warmup /bin/true </dev/null >/dev/null 2>&1
time_runs "$RUNC" runc
time_runs "$VXN" vxn
sleep 1
journalctl -u containerd --since "$since" --no-pager -o cat >"$WORK/journal" 2>/dev/null

vxn=$(median <"$WORK/vxn")
runc=$(median <"$WORK/runc")
echo "ctr run --rm $IMG /bin/true, median of $RUNS:"
printf '  %-34s %s s\n' "runc" "$runc" "vxn" "$vxn"
echo "$vxn $runc" | awk '{ if ($2 > 0) printf "  %-34s %.1fx\n", "vxn / runc", $1 / $2 }'
echo "vxn phases (median):"
shim_start
phase "rootfs ext4 image" "rootfs image built"
phase "xl create -p" "timing: xl create -p"
phase "agent ready (boot + handshake)" "timing: agent ready"
phase "container prepared in guest" "timing: container prepared"
phase "process start (unpause + exec)" "timing: process started"
phase "delete (destroy + cleanup)" "timing: deleted"
echo "shim memory with one container running:"
shim_memory "$VXN" containerd-shim-vxn-v2
shim_memory "$RUNC" containerd-shim-runc-v2
echo "ctr task exec ID /bin/true, median of 20:"
exec_latency "$VXN"
exec_latency "$RUNC"
