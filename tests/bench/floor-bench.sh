#!/bin/bash
# Benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench floor): vxn against its
# floors, interleaved run by run on the same dom0, with the default guest kernel:
#   F0      the raw-Xen floor: `xl create -F` of a bare PV domain (vxn's kernel, a busybox
#           /init that prints and powers off, no disk, no vif, no channel) until it is gone
#   vxn     `ctr run --rm --runtime io.containerd.vxn.v2 (no network) IMG ID /bin/true`
#   warm    the same, its VM claimed from the warm pool (docs/warm-pool.md): before each run
#           (untimed) a [pool] of one VM without refill is configured and filled; the config
#           is put back after the run, so the other runs boot their VMs
#   runc    `ctr run --rm IMG ID /bin/true`
#   stdout  `ctr run --rm IMG ID sh -c 'head -c N /dev/zero' | reader` (bytes counted), vxn vs runc
#   size    `ctr run --rm` /bin/true through vxn of IMG + a 16 MiB layer and IMG + a 1 GiB layer
#           (built in dom0 once per boot: uncompressed layers, ingested straight into containerd)
# and once: dom0 memory per running vxn container (RSS and PSS of the shim and every process
# it causes: QEMU, xl; the drop of MemAvailable). Expects /usr/share/vxn/x86_64/{vmlinuz,
# f0-initramfs.cpio.gz} (lab bench floor pushes them) and python3 in dom0.
# Usage: floor-bench.sh [RUNS] [quick]   (default 5). Prints numbers only; never fails on speed.
# quick: F0, vxn (cold and warm) and runc only (no stdout, image-size or memory part).
# VXN_FLOOR_MEM_N (3): containers for the memory part; VXN_FLOOR_BIG_MIB (1024): the big layer;
# VXN_FLOOR_OUT_MIB (16): what vxn's stdout carries (runc: 256 MiB).
set -u
RUNS=${1:-5}
QUICK=0
[ "${2:-}" = quick ] && QUICK=1
IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
IMG16=docker.io/library/vxn-test:floor16m
IMGBIG=docker.io/library/vxn-test:floor1g
BIG_MIB=${VXN_FLOOR_BIG_MIB:-1024}
MEM_N=${VXN_FLOOR_MEM_N:-3}
[ $QUICK = 1 ] && MEM_N=0
VXN_BYTES=$((${VXN_FLOOR_OUT_MIB:-16} << 20))   # ~70 KiB/s through vxn under TCG: ~4 min a run
RUNC_BYTES=$((256 << 20))
DIR=/usr/share/vxn/x86_64
KERNEL=${VXN_FLOOR_KERNEL:-$DIR/vmlinuz}
CTR=(ctr -n default)
VXN=(--runtime io.containerd.vxn.v2 --annotation vxn.network=none)
# VXN_FLOOR_RESUME=DIR: the work directory of an interrupted run (its files kept; its start
# time in DIR/start): no builds, no runs, only the memory part and the report over DIR.
RESUME=${VXN_FLOOR_RESUME:-}
if [ -n "$RESUME" ]; then WORK=$RESUME; else WORK=$(mktemp -d /tmp/vxn-floor.XXXXXX); fi
MEM_IDS=()
# shellcheck source=bench-pool.sh
. "$(dirname "$(readlink -f "$0")")/bench-pool.sh"
# build_image NAME MIB (the size images), disk_free_kb
# shellcheck source=bench-images.sh
. "$(dirname "$(readlink -f "$0")")/bench-images.sh"
# VXN_FLOOR_POOL=0: no warm runs (a vxnctl without `pool`)
POOL=${VXN_FLOOR_POOL:-1}

cleanup() {
  local id
  if [ "$POOL" = 1 ]; then
    pool_off
    vxnctl pool drain > /dev/null 2>&1
  fi
  for id in "${MEM_IDS[@]}"; do
    "${CTR[@]}" task kill -s KILL "$id" > /dev/null 2>&1
  done
  [ ${#MEM_IDS[@]} = 0 ] || sleep 3
  for id in "${MEM_IDS[@]}"; do
    "${CTR[@]}" task delete "$id" > /dev/null 2>&1
    "${CTR[@]}" container rm "$id" > /dev/null 2>&1
  done
  [ -n "$RESUME" ] || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
since() { echo "$1 $(now)" | awk '{printf "%.3f\n", $2 - $1}'; }
ratio() { echo "$1 $2" | awk '{ if ($1 + 0 > 0 && $2 != "-") printf "%.2f", $2 / $1; else printf "-" }'; }

for f in "$KERNEL" "$DIR/f0-initramfs.cpio.gz"; do
  [ -f "$f" ] || { echo "floor-bench: missing $f" >&2; exit 1; }
done
command -v python3 > /dev/null || { echo "floor-bench: python3 missing in dom0" >&2; exit 1; }

# f0 I: one bare domain from create to gone; its wall time appended to $WORK/f0.
f0() {
  local i=$1 cfg=$WORK/f0-$1.cfg t0
  cat > "$cfg" <<EOF
name = "vxn-f0-$i"
type = "pv"
kernel = "$KERNEL"
ramdisk = "$DIR/f0-initramfs.cpio.gz"
extra = "console=hvc0 quiet rdinit=/init"
memory = 256
vcpus = 1
on_poweroff = "destroy"
on_crash = "destroy"
vif = [ ]
disk = [ ]
EOF
  t0=$(now)
  if timeout 600 xl create -F "$cfg" > "$WORK/f0.out" 2>&1 && grep -q 'reason code 0 ' "$WORK/f0.out"; then
    since "$t0" >> "$WORK/f0"
  else
    echo "F0 run $i: the domain did not power off cleanly: $(tr '\n' ' ' < "$WORK/f0.out")" >&2
    xl destroy "vxn-f0-$i" > /dev/null 2>&1
  fi
}

# run KEY ID IMAGE RUNTIME-ARGS...: one `ctr run --rm IMAGE ID /bin/true`; wall time -> $WORK/KEY.
run() {
  local key=$1 id=$2 img=$3 t0
  shift 3
  t0=$(now)
  if "${CTR[@]}" run --rm "$@" "$img" "$id" /bin/true < /dev/null > /dev/null 2>&1; then
    since "$t0" >> "$WORK/$key"
  else
    echo "ctr run $id failed" >&2
  fi
}

# stream KEY ID BYTES RUNTIME-ARGS...: `head -c BYTES /dev/zero` in a container, its stdout
# read on dom0 through a pipe; "bytes first-to-last-byte(s) wall(s)" -> $WORK/KEY (a short
# count is reported and not kept).
stream() {
  local key=$1 id=$2 bytes=$3 t0 out
  shift 3
  t0=$(now)
  out=$("${CTR[@]}" run --rm "$@" "$IMG" "$id" sh -c "head -c $bytes /dev/zero" < /dev/null 2> /dev/null |
    python3 -c '
import sys, time
f = sys.stdin.buffer.raw; n = 0; t1 = t2 = 0.0
while True:
    b = f.read(1 << 20)
    if not b: break
    if not n: t1 = time.time()
    n += len(b); t2 = time.time()
print(n, "%.3f" % (t2 - t1))')
  read -r n dt <<< "$out"
  if [ "$n" = "$bytes" ]; then
    echo "$n $dt $(since "$t0")" >> "$WORK/$key"
  else
    echo "stdout $id: $n of $bytes bytes arrived" >&2
  fi
}

# rate KEY: median MiB/s of $WORK/KEY, from first to last byte.
rate() { awk '$2 > 0 {printf "%.2f\n", $1 / 1048576 / $2}' "$WORK/$1" 2> /dev/null | median; }
# rate_wall KEY BASE: median MiB/s from the wall time less BASE (the /bin/true run's median).
rate_wall() { awk -v b="$2" 'b != "-" && $3 - b > 0 {printf "%.2f\n", $1 / 1048576 / ($3 - b)}' "$WORK/$1" 2> /dev/null | median; }

start=$(date '+%Y-%m-%d %H:%M:%S')
[ -n "$RESUME" ] && start=$(cat "$WORK/start")
echo "$start" > "$WORK/start"
big=1
[ -n "$RESUME" ] && { [ -s "$WORK/sbig" ] || big=0; }
if [ -z "$RESUME" ]; then
# the size images (cached for this boot); the big one only when the disk holds it: its layer
# blob and snapshot while it unpacks, then (the blob removed) the snapshot and a create's copy
[ $QUICK = 1 ] && big=0
if [ $QUICK = 0 ] && ! "${CTR[@]}" images ls -q | grep -qx "$IMGBIG"; then
  need=$(((BIG_MIB * 2 + 300) * 1024))
  if [ "$(disk_free_kb)" -lt "$need" ]; then
    big=0
    echo "size +${BIG_MIB} MiB: skipped: not enough space ($(disk_free_kb) KiB free, $need needed)"
  fi
fi
if [ $QUICK = 0 ]; then
  t0=$(now)
  build_image "$IMG16" 16 || { echo "floor-bench: building $IMG16 failed" >&2; exit 1; }
  echo "built $IMG16 in $(since "$t0") s"
fi
if [ $big = 1 ]; then
  t0=$(now)
  KEEP_LAYER=0 build_image "$IMGBIG" "$BIG_MIB" || { echo "floor-bench: building $IMGBIG failed" >&2; big=0; }
  [ $big = 1 ] && echo "built $IMGBIG in $(since "$t0") s (layer blob removed after unpack; $(disk_free_kb) KiB free)"
fi

# warm-up: page cache, images unpacked
f0 0
run warm floor-warm-vxn "$IMG" "${VXN[@]}"
run warm floor-warm-runc "$IMG"
if [ "$POOL" = 1 ]; then pool_on size; run warm floor-warm-pool "$IMG" "${VXN[@]}"; pool_off; fi
[ $QUICK = 0 ] && run warm floor-warm-16m "$IMG16" "${VXN[@]}"
[ $big = 1 ] && run warm floor-warm-big "$IMGBIG" "${VXN[@]}"
: > "$WORK/f0"
for ((i = 1; i <= RUNS; i++)); do
  f0 "$i"
  run vxn "floor-vxn-$i" "$IMG" "${VXN[@]}"
  run runc "floor-runc-$i" "$IMG"
  if [ "$POOL" = 1 ]; then pool_on size; run pool "floor-pool-$i" "$IMG" "${VXN[@]}"; pool_off; fi
  [ $QUICK = 1 ] && continue
  run s16 "floor-s16-$i" "$IMG16" "${VXN[@]}"
  [ $big = 1 ] && run sbig "floor-sbig-$i" "$IMGBIG" "${VXN[@]}"
  stream out-vxn "floor-out-vxn-$i" "$VXN_BYTES" "${VXN[@]}"
  stream out-runc "floor-out-runc-$i" "$RUNC_BYTES"
done
fi # RESUME

# dom0 memory per running container: MEM_N vxn containers up at once; per container the
# shim, its descendants and every process naming its domain (QEMU: -xen-domid N; xl: the
# domain's name or the container's id)
sync; echo 1 > /proc/sys/vm/drop_caches 2> /dev/null
mem_before=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
for ((i = 1; i <= MEM_N; i++)); do
  id=floor-mem-$i
  before=$(xl list | awk 'NR > 1 {print $2}' | sort)
  if "${CTR[@]}" run -d "${VXN[@]}" "$IMG" "$id" sleep 1000 < /dev/null > /dev/null 2>&1; then
    MEM_IDS+=("$id")
    after=$(xl list | awk 'NR > 1 {print $2}' | sort)
    comm -13 <(echo "$before") <(echo "$after") | head -1 > "$WORK/domid-$id"
  else
    echo "ctr run -d $id failed" >&2
  fi
done
sleep 5
sync; echo 1 > /proc/sys/vm/drop_caches 2> /dev/null
mem_after=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
for id in "${MEM_IDS[@]}"; do
  domid=$(cat "$WORK/domid-$id")
  dname=$(xl list | awk -v d="$domid" 'NR > 1 && $2 == d {print $1}')
  shim=$(pgrep -f "containerd-shim-vxn-v2 .*-id $id( |$)" | head -1)
  {
    # the shim and its descendants
    [ -n "$shim" ] && ps -e -o pid=,ppid= | awk -v r="$shim" '
      {p[$1] = $2} END { s[r] = 1; do { c = 0; for (x in p) if (!(x in s) && (p[x] in s)) { s[x] = 1; c = 1 } } while (c); for (x in s) print x }'
    # whatever names the domain or the container
    for d in /proc/[0-9]*; do
      cl=$(tr '\0' ' ' < "$d/cmdline" 2> /dev/null) || continue
      case " $cl " in
        *" -xen-domid $domid "* | *"$id"* ) echo "${d#/proc/}" ;;
        *) [ -n "$dname" ] && [[ " $cl " == *"$dname"* ]] && echo "${d#/proc/}" ;;
      esac
    done
  } | sort -un | while read -r pid; do
    [ "$pid" = $$ ] && continue
    comm=$(cat "/proc/$pid/comm" 2> /dev/null) || continue
    case $comm in
      containerd-shim*) cat=shim ;;
      *qemu*) cat=qemu ;;   # comm: xen-qemu-system (truncated)
      xl) cat=xl ;;
      *) cat=other ;;
    esac
    awk -v c="$cat" -v n="$comm" '/^Rss:/ {r = $2} /^Pss:/ {p = $2} END {print c, r + 0, p + 0, n}' "/proc/$pid/smaps_rollup" 2> /dev/null
  done > "$WORK/mem-$id"
done

sleep 1
journalctl -u containerd --since "$start" --no-pager -o cat > "$WORK/journal" 2> /dev/null
# phase KEYPATTERN MESSAGE: median took_ms (s) of the shim's MESSAGE lines of the measured runs.
# MESSAGE is an extended regex.
phase() {
  grep -E "$1" "$WORK/journal" | grep -E -- "$2" | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p' |
    awk '{printf "%.3f\n", $1 / 1000}' | median
}
# The rootfs: copied into an ext4 image, or the cached read-only image + a writable layer.
ROOTFS_MSG='rootfs image built|timing: layered rootfs ready'
size_mib() { grep -E "$1" "$WORK/journal" | grep -E "$ROOTFS_MSG" | sed -n 's/.*\(size\|image\)_mib=\([0-9]*\).*/\2/p' | median; }
# first_build KEYPATTERN: the layered rootfs's time when the read-only image was built (not cached).
first_build() { phase "$1" 'timing: layered rootfs ready.* cached=false|cached=false.*timing: layered rootfs ready'; }

row() { printf '  %-44s %10s %10s %10s\n' "$@"; }
echo "vxn vs its floors, interleaved, median of $RUNS (s)"
f0m=$(median < "$WORK/f0"); vxm=$(median < "$WORK/vxn"); rcm=$(median < "$WORK/runc")
printf '  %-44s %10s\n' "F0: bare PV domain, create to gone" "$f0m" \
  "vxn: ctr run --rm IMG /bin/true (no network)" "$vxm" "runc: ctr run --rm IMG /bin/true" "$rcm"
echo "  vxn/F0 $(ratio "$f0m" "$vxm"), vxn/runc $(ratio "$rcm" "$vxm"), (vxn - runc)/F0 $(echo "$vxm $rcm $f0m" | awk '$1 != "-" && $2 != "-" && $3 + 0 > 0 {printf "%.2f", ($1 - $2) / $3}')"
echo "  runs: F0 $(wc -l < "$WORK/f0")/$RUNS, vxn $(wc -l < "$WORK/vxn")/$RUNS, runc $(wc -l < "$WORK/runc")/$RUNS"
if [ "$POOL" = 1 ]; then
  plm=$(median < "$WORK/pool" 2> /dev/null)
  claimed=$(grep -E 'floor-pool-[1-9][0-9]*[ "]' "$WORK/journal" | grep -c 'claimed a pooled VM')
  printf '  %-44s %10s\n' "warm vxn: the same, a pooled VM claimed" "$plm"
  echo "  warm/runc $(ratio "$rcm" "$plm"), warm/cold vxn $(ratio "$vxm" "$plm"); runs: $(wc -l < "$WORK/pool" 2> /dev/null || echo 0)/$RUNS, of which claimed a pooled VM: $claimed"
  # (a running pooled VM's agent is reached while it is fitted: no "agent ready" of its own)
  printf '  warm phases (s): pooled VM fitted + agent %s, container prepared %s, process started %s, deleted %s\n' \
    "$(phase 'floor-pool-[1-9][0-9]*[ "]' 'timing: pooled VM fitted')" \
    "$(phase 'floor-pool-[1-9][0-9]*[ "]' 'timing: container prepared')" "$(phase 'floor-pool-[1-9][0-9]*[ "]' 'timing: process started')" \
    "$(phase 'floor-pool-[1-9][0-9]*[ "]' 'timing: deleted')"
  printf '  cold phases (s):  create paused %s, agent ready %s, container prepared %s, process started %s, deleted %s\n' \
    "$(phase 'floor-vxn-[1-9][0-9]*[ "]' 'timing: create paused')" "$(phase 'floor-vxn-[1-9][0-9]*[ "]' 'timing: agent ready')" \
    "$(phase 'floor-vxn-[1-9][0-9]*[ "]' 'timing: container prepared')" "$(phase 'floor-vxn-[1-9][0-9]*[ "]' 'timing: process started')" \
    "$(phase 'floor-vxn-[1-9][0-9]*[ "]' 'timing: deleted')"
fi

[ $QUICK = 1 ] && exit 0
echo "stdout throughput: head -c N /dev/zero in the container | pipe on dom0 (all bytes checked), median"
echo "  (stream: first to last byte; wall: N / (ctr run wall - the /bin/true median))"
row "" "N (MiB)" "stream" "wall"
ov=$(rate out-vxn); orc=$(rate out-runc)
row "vxn (MiB/s)" $((VXN_BYTES >> 20)) "$ov" "$(rate_wall out-vxn "$vxm")"
row "runc (MiB/s)" $((RUNC_BYTES >> 20)) "$orc" "$(rate_wall out-runc "$rcm")"
echo "  runc/vxn (stream) $(ratio "$ov" "$orc"); runs: vxn $(wc -l < "$WORK/out-vxn" 2> /dev/null || echo 0)/$RUNS, runc $(wc -l < "$WORK/out-runc" 2> /dev/null || echo 0)/$RUNS"

echo "create time vs image size (vxn, ctr run --rm /bin/true), median of $RUNS (s)"
row "" "rootfs MiB" "ctr run" "rootfs img"
row "IMG (busybox)" "$(size_mib 'floor-vxn-[1-9][0-9]*[ "]')" "$vxm" "$(phase 'floor-vxn-[1-9][0-9]*[ "]' "$ROOTFS_MSG")"
s16=$(median < "$WORK/s16"); p16=$(phase 'floor-s16-[1-9][0-9]*[ "]' "$ROOTFS_MSG")
row "IMG + 16 MiB layer" "$(size_mib 'floor-s16-[1-9][0-9]*[ "]')" "$s16" "$p16"
if [ $big = 1 ]; then
  sb=$(median < "$WORK/sbig"); pb=$(phase 'floor-sbig-[1-9][0-9]*[ "]' "$ROOTFS_MSG")
  row "IMG + $BIG_MIB MiB layer" "$(size_mib 'floor-sbig-[1-9][0-9]*[ "]')" "$sb" "$pb"
  echo "  big/16MiB: ctr run $(ratio "$s16" "$sb"), rootfs image $(ratio "$p16" "$pb")"
  echo "  vxn phases (s)           IMG      +16MiB   +${BIG_MIB}MiB"
  printf '  %-22s %8s %8s %8s\n' "read-only image build" "$(first_build 'floor-vxn-[0-9]+[ "]')" \
    "$(first_build 'floor-s16-[0-9]+[ "]')" "$(first_build 'floor-sbig-[0-9]+[ "]')"
  for ph in 'create paused' 'agent ready' 'container prepared' 'process started' 'deleted'; do
    printf '  %-22s %8s %8s %8s\n' "$ph" "$(phase 'floor-vxn-[1-9][0-9]*[ "]' "timing: $ph")" \
      "$(phase 'floor-s16-[1-9][0-9]*[ "]' "timing: $ph")" "$(phase 'floor-sbig-[1-9][0-9]*[ "]' "timing: $ph")"
  done
else
  echo "  IMG + $BIG_MIB MiB layer: skipped"
fi

echo "dom0 memory per running vxn container ($MEM_N running; KiB; RSS counts shared pages in full, PSS splits them)"
printf '  %-14s %8s %8s %8s %8s %8s %8s\n' "" shim qemu xl other total "#qemu"
for id in "${MEM_IDS[@]}"; do
  for m in rss pss; do
    awk -v m=$m -v id="$id" '{ v = (m == "rss") ? $2 : $3; s[$1] += v; t += v; if ($1 == "qemu") q++ }
      END { printf "  %-14s %8d %8d %8d %8d %8d %8d\n", id " " m, s["shim"], s["qemu"], s["xl"], s["other"], t, q }' "$WORK/mem-$id"
  done
done
cat "$WORK"/mem-floor-mem-* 2> /dev/null | awk '{n[$1 " " $4]++} END {for (k in n) printf "  process: %s x%d\n", k, n[k]}' | sort
if [ ${#MEM_IDS[@]} -gt 0 ]; then
  echo "  dom0 MemAvailable drop: $(((mem_before - mem_after) / ${#MEM_IDS[@]})) KiB per container ($((mem_before - mem_after)) KiB for ${#MEM_IDS[@]}; page cache dropped first)"
fi
