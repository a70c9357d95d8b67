#!/bin/bash
# Pod benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench pod), through
# containerd's CRI with vxn-crictl. Alternating runc and vxn pods, so the numbers compare:
#  - pod start: runp + create + start of two containers (`sleep`), and each part; vxn
#    twice: its pod VM booted, and claimed from the warm pool ("vxn-warm": a pool of one
#    pod VM, without refill, configured and filled before the run, untimed; the config
#    put back after it);
#  - what a running pod holds of dom0: MemAvailable before and with the pod up (for vxn:
#    the pod's QEMU, shim and backends; the DomU's own memory is Xen's, shown apart);
#  - pod removal: stopp + rmp;
#  - size: a container's create and start in a running pod (runp untimed), of IMG + a 16 MiB
#    layer against IMG + a 1 GiB layer (VXN_POD_BIG_MIB), interleaved run by run, vxn and runc
#    (each in one pod of its own); each container stopped and removed after (untimed). A vxn
#    pod container's rootfs is the image cache's read-only EROFS image (built once per layer
#    chain: by an untimed warm-up create of each image) plus a writable layer of its own, so
#    neither should depend on the image's size. (CRI's CreateContainer makes the container's
#    record and snapshot only; the task, where vxn takes the rootfs, is created by
#    StartContainer: both are timed, apart.) The images are built in dom0 in k8s.io once per
#    boot (bench-images.sh), unpacked for overlayfs before any create.
# Usage: pod-bench.sh [RUNS]  (default 5). Prints numbers; never fails on speed.
# VXN_POD_SIZE=0: no size part (also skipped when the disk cannot hold the big image);
# VXN_POD_BIG_MIB (1024): the big layer.
set -u
RUNS=${1:-5}
SIZE=${VXN_POD_SIZE:-1}
BIG_MIB=${VXN_POD_BIG_MIB:-1024}
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
# build_image NAME MIB NAMESPACE, image_chain_id, disk_free_kb (the size part)
# shellcheck source=bench-images.sh
. "$(dirname "$(readlink -f "$0")")/bench-images.sh"
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

[ "$SIZE" = 1 ] || { echo "size: skipped (VXN_POD_SIZE=$SIZE)"; exit 0; }

# size: create (and start) time vs image size, in a running pod per runtime.
IMG16=${IMG%:*}:size16m
IMGBIG=${IMG%:*}:size${BIG_MIB}m
since() { sub "$(now)" "$1"; }
committed() { ctr -n "$CRI_NS" snapshots ls 2> /dev/null | awk '$NF == "Committed"' | wc -l; }
# rootfs_since EPOCH-SECOND: "took(s) cached image-MiB" of the newest `timing: layered rootfs
# ready` line of containerd's journal since then (the pod shim's), or nothing.
rootfs_since() {
  journalctl -u containerd --since "@$1" --no-pager -o cat 2> /dev/null | grep 'timing: layered rootfs ready' | tail -1 |
    awk '{for (i = 1; i <= NF; i++) {n = index($i, "="); if (n) f[substr($i, 1, n - 1)] = substr($i, n + 1)}
      printf "%.3f %s %s\n", f["took_ms"] / 1000, f["cached"], f["image_mib"]}'
}
# image_built_since EPOCH-SECOND: the newest `timing: image built` (mkfs.erofs) time (s), or nothing.
image_built_since() {
  journalctl -u containerd --since "@$1" --no-pager -o cat 2> /dev/null | grep 'timing: image built' | tail -1 |
    sed -n 's/.*took_ms=\([0-9]*\).*/\1/p' | awk '{printf "%.3f\n", $1 / 1000}'
}
# size_run KEY RT IMAGE POD NAME: create a container of IMAGE (sleep) in POD, then start it,
# timed apart; stop and remove it (untimed). Appends create and start times to T[KEY.create],
# T[KEY.start], T[KEY.both]; for vxn the layered rootfs's time to T[KEY.rootfs]. Prints a line.
size_run() {
  local key=$1 rt=$2 img=$3 pod=$4 name=$5 cfg t0 t1 t2 c sec rc rs where=start
  cfg=$(ctr_json "$name" 0 "$img" sleep 3000)
  sync; echo 3 > /proc/sys/vm/drop_caches
  sec=$(date +%s)
  t0=$(now)
  c=$("${CRI[@]}" --timeout 900 create "$pod" "$cfg" "$CRI_WORK/size-$rt-pod.json") || { echo "size: create $key failed"; return 1; }
  t1=$(now)
  [ "$rt" = vxn ] && rc=$(rootfs_since "$sec")
  "${CRI[@]}" --timeout 900 start "$c" > /dev/null || { echo "size: start $key failed"; "${CRI[@]}" rm "$c" > /dev/null 2>&1; return 1; }
  t2=$(now)
  "${CRI[@]}" stop "$c" > /dev/null 2>&1
  "${CRI[@]}" rm "$c" > /dev/null 2>&1 || echo "size: rm $key ($c) failed"
  T[$key.create]+="$(sub "$t1" "$t0") "
  T[$key.start]+="$(sub "$t2" "$t1") "
  T[$key.both]+="$(sub "$t2" "$t0") "
  if [ "$rt" = vxn ]; then
    if [ -n "$rc" ]; then rs=$rc; where=create; else rs=$(rootfs_since "$sec"); fi
    # shellcheck disable=SC2086 # "took cached MiB"
    set -- $rs
    [ -n "${1:-}" ] && T[$key.rootfs]+="$1 "
    rs=", layered rootfs ${1:--} s (cached=${2:--}, image ${3:--} MiB, in $where)"
  fi
  echo "  $key: create $(sub "$t1" "$t0") s, start $(sub "$t2" "$t1") s${rs:-}"
}

if ! ctr -n "$CRI_NS" images ls -q | grep -qx "$IMGBIG"; then
  # the big layer's blob and its snapshot while it unpacks; then (the blob removed) the
  # snapshot and the image cache's EROFS image
  need=$(((BIG_MIB * 2 + 300) * 1024))
  if [ "$(disk_free_kb)" -lt "$need" ]; then
    echo "size: skipped: not enough space for +${BIG_MIB} MiB ($(disk_free_kb) KiB free, $need needed)"
    exit 0
  fi
fi
c0=$(committed)
t0=$(now)
build_image "$IMG16" 16 "$CRI_NS" || { echo "size: building $IMG16 failed"; exit 0; }
echo "size: built $IMG16 in k8s.io in $(since "$t0") s"
t0=$(now)
KEEP_LAYER=0 build_image "$IMGBIG" "$BIG_MIB" "$CRI_NS" || { echo "size: building $IMGBIG failed"; exit 0; }
echo "size: built $IMGBIG in k8s.io in $(since "$t0") s (layer blob removed after unpack; $(disk_free_kb) KiB free)"
for im in "$IMG16" "$IMGBIG"; do
  chain=$(image_chain_id "$im" "$CRI_NS")
  if ctr -n "$CRI_NS" snapshots --snapshotter overlayfs info "$chain" > /dev/null 2>&1; then
    echo "size: $im unpacked for overlayfs (chain ${chain:7:12})"
  else
    echo "size: $im NOT unpacked for overlayfs (chain $chain): its first create unpacks it"
  fi
done
echo "size: committed snapshots in k8s.io: $c0 before the builds, $(committed) after"

declare -A SPOD
for rt in vxn runc; do
  SPOD[$rt]=$("${CRI[@]}" runp --runtime "$rt" "$(pod_json "size-$rt")") || { echo "size: runp $rt failed"; exit 0; }
done
# warm-up, untimed: each image once per runtime (vxn: its first create builds the image
# cache's EROFS image of the layer chain)
c1=$(committed)
echo "size: warm-up (one create + start of each image per runtime; vxn builds its EROFS images):"
for rt in vxn runc; do
  for s in 16m big; do
    img=$IMG16; [ "$s" = big ] && img=$IMGBIG
    sec=$(date +%s)
    size_run "warm-$rt-$s" "$rt" "$img" "${SPOD[$rt]}" "size-warm-$s"
    if [ "$rt" = vxn ]; then echo "    (mkfs.erofs: $(image_built_since "$sec") s)"; fi
  done
done
echo "size: committed snapshots in k8s.io: $c1 before the warm-up, $(committed) after (an unpack at create adds some); $(disk_free_kb) KiB free"
for ((i = 1; i <= RUNS; i++)); do
  echo "size run $i:"
  order=(16m big)
  [ $((i % 2)) = 0 ] && order=(big 16m)
  for rt in vxn runc; do
    for s in "${order[@]}"; do
      img=$IMG16; [ "$s" = big ] && img=$IMGBIG
      size_run "$rt-$s" "$rt" "$img" "${SPOD[$rt]}" "size-$s-$i"
    done
  done
done
for rt in vxn runc; do
  "${CRI[@]}" stopp "${SPOD[$rt]}" > /dev/null 2>&1; "${CRI[@]}" rmp "${SPOD[$rt]}" > /dev/null 2>&1
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a + 0 > 0 && b != "-") printf "%.2f", b / a; else printf "-"}'; }
echo "container create vs image size, in a running pod: crictl create, then start (median of $RUNS, s)"
printf '  %-8s %-10s %8s %8s %13s %14s\n' runtime image create start create+start "layered-rootfs"
for rt in vxn runc; do
  for s in 16m big; do
    label="+16 MiB"; [ "$s" = big ] && label="+$BIG_MIB MiB"
    rf=-; [ "$rt" = vxn ] && rf=$(m "$rt-$s.rootfs")
    printf '  %-8s %-10s %8s %8s %13s %14s\n' "$rt" "$label" "$(m "$rt-$s.create")" "$(m "$rt-$s.start")" "$(m "$rt-$s.both")" "$rf"
  done
done
for rt in vxn runc; do
  echo "  $rt +${BIG_MIB}MiB/+16MiB: create $(ratio "$(m "$rt-16m.create")" "$(m "$rt-big.create")"), start $(ratio "$(m "$rt-16m.start")" "$(m "$rt-big.start")"), create+start $(ratio "$(m "$rt-16m.both")" "$(m "$rt-big.both")")"
done
for rt in vxn runc; do
  for s in 16m big; do
    echo "  runs $rt-$s: create ${T[$rt-$s.create]:-}| start ${T[$rt-$s.start]:-}"
  done
done
