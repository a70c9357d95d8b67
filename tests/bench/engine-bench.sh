#!/bin/bash
# Docker and Podman with vxn-oci-runtime against runc, in one run (in dom0): the median of
# `docker run --rm --network=none IMG true` (and podman's) per runtime, interleaved so both
# see the same host, and the dom0 memory a running vxn container costs (its keeper's RSS, and
# every process its domain brings: QEMU). Prints numbers, never fails on them.
# Usage: engine-bench.sh [RUNS] (default 5). Env: VXN_ENGINE_IMAGE (docker.io/library/vxn-test:latest).
set -uo pipefail
RUNS=${1:-5}
IMG=${VXN_ENGINE_IMAGE:-docker.io/library/vxn-test:latest}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# time_run ENGINE RUNTIME: seconds of one `ENGINE run --rm`, or nothing if it failed.
time_run() {
  local t0 t1
  t0=$(now)
  "$1" run --rm --network=none --runtime "$2" "$IMG" true >/dev/null 2>&1 || return 1
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}'
}

declare -A samples
for ((i = 1; i <= RUNS; i++)); do
  for engine in docker podman; do
    command -v $engine >/dev/null || continue
    for rt in runc vxn; do
      s=$(time_run $engine $rt) && samples[$engine/$rt]+="$s"$'\n'
    done
  done
done

echo "engine run --rm --network=none IMG true, median of $RUNS (interleaved):"
for engine in docker podman; do
  command -v $engine >/dev/null || continue
  r=$(printf %s "${samples[$engine/runc]:-}" | median)
  v=$(printf %s "${samples[$engine/vxn]:-}" | median)
  ratio=-
  [ "$r" != - ] && [ "$v" != - ] && ratio=$(awk -v v="$v" -v r="$r" 'BEGIN {printf "%.2f", v / r}')
  printf '  %-7s runc %6ss  vxn %6ss  vxn/runc %sx\n' "$engine" "$r" "$v" "$ratio"
done

# dom0 memory of one running vxn container under Docker.
if command -v docker >/dev/null; then
  docker run -d --name vxn-bench-mem --network=none --runtime vxn "$IMG" sleep 600 >/dev/null 2>&1 &&
    for _ in $(seq 120); do docker inspect -f '{{.State.Running}}' vxn-bench-mem 2>/dev/null | grep -q true && break; sleep 1; done
  id=$(docker inspect -f '{{.Id}}' vxn-bench-mem 2>/dev/null)
  keeper=$(pgrep -f "__keep .* $id --ready-fd" | head -1)
  if [ -n "$keeper" ]; then
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$keeper/status")
    dom=$(xl list 2>/dev/null | awk -v id="${id:0:20}" 'index($1, id) {print $2}' | head -1)
    qemu=0
    [ -n "$dom" ] && qemu=$(pgrep -f "qemu.*-xen-domid $dom " | xargs -r -I{} awk '/VmRSS/ {print $2}' /proc/{}/status | awk '{s+=$1} END {print s+0}')
    echo "dom0 memory of a running vxn container: keeper ${rss} KiB RSS, its domain's QEMU ${qemu} KiB RSS"
  else
    echo "dom0 memory: no keeper found for vxn-bench-mem"
  fi
  docker rm -f vxn-bench-mem >/dev/null 2>&1
fi
