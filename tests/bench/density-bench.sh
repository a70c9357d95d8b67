#!/bin/bash
# Density benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench density): vxn
# containers (`ctr run -d`, no network, the smallest memory) started one after the other,
# all kept running, until Xen has no memory for one more or VXN_DENSITY_MAX run. Prints
# each create's time, the first, middle and last, how many ran, Xen's free memory per
# container and dom0's memory per container (the drop of MemAvailable, page cache dropped
# first); then removes them all and checks nothing is left.
# Usage: density-bench.sh [MAX]   (default 200). Prints numbers; fails only when a
# container cannot be removed.
# VXN_DENSITY_MIB (16): each container's memory limit (its VM: the limit plus the config's
# guest_overhead_mib, at least min_memory_mib: 16 MiB gets the smallest VM; the domains'
# memory is printed).
set -u
MAX=${1:-${VXN_DENSITY_MAX:-200}}
IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
CTR=(ctr -n default)
VXN=(--runtime io.containerd.vxn.v2 --annotation vxn.network=none)
MIB=${VXN_DENSITY_MIB:-16}
WORK=$(mktemp -d /tmp/vxn-density.XXXXXX)
IDS=()

now() { date +%s.%N; }
since() { echo "$1 $(now)" | awk '{printf "%.3f\n", $2 - $1}'; }
avail_kib() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
xen_free_mib() { xl info | awk '$1 == "free_memory" {print $3}'; }

cleanup() {
  local id ok=0
  for id in "${IDS[@]}"; do "${CTR[@]}" task kill -s KILL "$id" > /dev/null 2>&1; done
  [ ${#IDS[@]} = 0 ] || sleep 3
  for id in "${IDS[@]}"; do
    "${CTR[@]}" task delete "$id" > /dev/null 2>&1
    "${CTR[@]}" container rm "$id" > /dev/null 2>&1
    if "${CTR[@]}" containers ls -q | grep -qx "$id"; then echo "density: $id could not be removed" >&2; ok=1; fi
  done
  left=$(xl list | awk 'NR > 1 && $1 ~ /^vxn-default-density-/' | wc -l)
  [ "$left" = 0 ] || { echo "density: $left domains left" >&2; ok=1; }
  rm -rf "$WORK"
  return $ok
}
trap 'cleanup; exit $?' EXIT

sync; echo 3 > /proc/sys/vm/drop_caches
mem0=$(avail_kib)
free0=$(xen_free_mib)
echo "density: up to $MAX containers of $MIB MiB (no network); Xen free ${free0} MiB, dom0 MemAvailable $((mem0 / 1024)) MiB"
for ((i = 1; i <= MAX; i++)); do
  id=density-$i
  t0=$(now)
  if ! err=$("${CTR[@]}" run -d "${VXN[@]}" --memory-limit $((MIB << 20)) "$IMG" "$id" sleep 1000000 2>&1 < /dev/null); then
    echo "container $i not created: $(echo "$err" | tail -1 | cut -c1-200)"
    "${CTR[@]}" container rm "$id" > /dev/null 2>&1
    break
  fi
  IDS+=("$id")
  echo "$i $(since "$t0")" >> "$WORK/create"
  [ $((i % 10)) = 0 ] && echo "  $i running, last create $(tail -1 "$WORK/create" | cut -d' ' -f2) s, Xen free $(xen_free_mib) MiB"
done
n=${#IDS[@]}
sync; echo 3 > /proc/sys/vm/drop_caches
sleep 5
mem1=$(avail_kib)
free1=$(xen_free_mib)
at() { awk -v n="$1" '$1 == n {print $2}' "$WORK/create"; }
echo "running: $n containers"
if [ "$n" -gt 0 ]; then
  mid=$(((n + 1) / 2))
  echo "create time (s): first $(at 1), middle (#$mid) $(at "$mid"), last (#$n) $(at "$n")"
  tenths=""
  for ((b = 0; b < 10; b++)); do
    tenths+="$(awk -v n="$n" -v b=$b 'int(($1 - 1) * 10 / n) == b {print $2}' "$WORK/create" | sort -n |
      awk '{v[NR] = $1} END {if (NR) printf "%s ", v[int((NR + 1) / 2)]}')"
  done
  echo "create time by tenth of the run (median of each, s): $tenths"
  echo "domain memory (xl list, MiB): $(xl list | awk 'NR > 1 && $1 ~ /^vxn-default-density-/ {print $3}' | sort -n | uniq -c | awk '{printf "%s x%s ", $2, $1}')"
  echo "Xen memory per container: $(((free0 - free1) / n)) MiB ($((free0 - free1)) MiB for $n)"
  echo "dom0 memory per container (MemAvailable drop): $(((mem0 - mem1) / n)) KiB ($(((mem0 - mem1) / 1024)) MiB for $n)"
fi
