#!/bin/bash
# Pod benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench pod), through
# containerd's CRI with vxn-crictl. Alternating runc and vxn pods, so the numbers compare:
#  - pod start: runp + create + start of two containers (`sleep`), and each part; vxn
#    twice: its pod VM booted, and claimed from the warm pool ("vxn-warm": a pool of one
#    pod VM, without refill, configured and filled before the run, untimed; the config
#    put back after it);
#  - what a running pod holds of dom0: MemAvailable before and with the pod up (for vxn:
#    the pod's QEMU, shim and backends; the DomU's own memory is Xen's, shown apart);
#  - pod removal: stopp + rmp.
# Usage: pod-bench.sh [RUNS]  (default 5). Prints numbers; never fails on speed.
set -u
RUNS=${1:-5}
# the suites' settings and the CRI helpers (cri_setup, run_pod, ctr_json, ...)
# shellcheck source=../e2e/e2e-lib.sh
. "$(dirname "$(readlink -f "$0")")/e2e-lib.sh"
# shellcheck source=../e2e/cri-e2e.sh
. "$(dirname "$(readlink -f "$0")")/cri-e2e.sh"
WORK=$(mktemp -d /tmp/vxn-pod-bench.XXXXXX)
CRI_WORK=$WORK

now() { date +%s.%N; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
avail_kib() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }

# shellcheck source=bench-pool.sh
. "$(dirname "$(readlink -f "$0")")/bench-pool.sh"
trap 'pool_off; vxnctl pool drain > /dev/null 2>&1; cri_cleanup; rm -rf "$WORK"' EXIT
RTS=(runc vxn)
vxnctl pool status > /dev/null 2>&1 && RTS+=(vxn-warm)

cri_setup || { echo "pod-bench: CRI is not set up"; exit 1; }
declare -A T
for ((i = 1; i <= RUNS; i++)); do
  for key in "${RTS[@]}"; do
    rt=${key%-warm}
    [ "$key" = vxn-warm ] && pool_on pod_size
    sync; echo 3 > /proc/sys/vm/drop_caches
    before=$(avail_kib)
    t0=$(now)
    pod=$("${CRI[@]}" runp --runtime "$rt" "$(pod_json "bench-$rt")") || { echo "runp $key failed"; pool_off; continue; }
    t1=$(now)
    c=$("${CRI[@]}" create "$pod" "$(ctr_json bench 0 "$IMG" sleep 3000)" "$CRI_WORK/bench-$rt-pod.json") &&
      c2=$("${CRI[@]}" create "$pod" "$(ctr_json bench2 0 "$IMG" sleep 3000)" "$CRI_WORK/bench-$rt-pod.json") ||
      { echo "create $key failed"; cri_cleanup; pool_off; continue; }
    t2=$(now)
    "${CRI[@]}" start "$c" >/dev/null && "${CRI[@]}" start "$c2" >/dev/null ||
      { echo "start $key failed"; cri_cleanup; pool_off; continue; }
    t3=$(now)
    pool_off
    sleep 2
    after=$(avail_kib)
    dom=0
    [ "$rt" = vxn ] && dom=$(xl list | awk 'NR > 1 && $1 != "Domain-0" {s += $3} END {print s + 0}')
    t4=$(now)
    "${CRI[@]}" stopp "$pod" >/dev/null && "${CRI[@]}" rmp "$pod" >/dev/null
    t5=$(now)
    T[$key.runp]+="$(sub "$t1" "$t0") "
    T[$key.create]+="$(sub "$t2" "$t1") "
    T[$key.start]+="$(sub "$t3" "$t2") "
    T[$key.total]+="$(sub "$t3" "$t0") "
    T[$key.remove]+="$(sub "$t5" "$t4") "
    T[$key.dom0_mib]+="$(((before - after) / 1024)) "
    T[$key.domu_mib]+="$dom "
    echo "run $i $key: pod start $(sub "$t3" "$t0") s (runp $(sub "$t1" "$t0"), create $(sub "$t2" "$t1"), start $(sub "$t3" "$t2")), dom0 -$(((before - after) / 1024)) MiB, removal $(sub "$t5" "$t4") s"
  done
done
m() { echo "${T[$1]:-}" | tr ' ' '\n' | grep -v '^$' | median; }
echo "pod start (runp + create + start of two containers), median of $RUNS:"
printf '  %-8s %8s %8s %8s %8s %10s %10s %10s\n' runtime total runp create start removal dom0-MiB DomU-MiB
for key in "${RTS[@]}"; do
  printf '  %-8s %8s %8s %8s %8s %10s %10s %10s\n' "$key" "$(m $key.total)" "$(m $key.runp)" "$(m $key.create)" \
    "$(m $key.start)" "$(m $key.remove)" "$(m $key.dom0_mib)" "$(m $key.domu_mib)"
done
awk -v v="$(m vxn.total)" -v w="$(m vxn-warm.total)" -v r="$(m runc.total)" \
  'BEGIN {if (r > 0) printf "vxn/runc pod start: %.1fx; warm (a pooled pod VM)/runc: %s\n", v / r, (w > 0) ? sprintf("%.1fx", w / r) : "-"}'
