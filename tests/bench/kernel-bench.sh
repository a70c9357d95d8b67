#!/bin/bash
# Benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench kernel): Debian's guest
# kernel against vxn's own (kernel/), interleaved run by run on the same dom0:
#   F0      the raw-Xen floor: `xl create -F` of a bare PV domain (the kernel, a busybox
#           /init that prints and powers off, no disk, no vif, no channel) until it is gone
#   ctr     `ctr run --rm IMG ID /bin/true` through vxn, without a network (as F0)
#   ready   unpause to the agent's hello (the shim's "timing: agent ready")
# and once per kernel: its size, and the guest memory in use after boot (a container's
# view of /proc/meminfo: MemTotal - MemAvailable, and MemTotal itself).
# Expects /usr/share/vxn/x86_64/{debian,vxn}/{vmlinuz,initramfs.cpio.gz} and
# /usr/share/vxn/x86_64/f0-initramfs.cpio.gz (lab bench kernel pushes them).
# Usage: kernel-bench.sh [RUNS]   (default 5). Prints numbers only; never fails on speed.
set -u
RUNS=${1:-5}
IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
DIR=/usr/share/vxn/x86_64
KINDS=(debian vxn)
CONF=/etc/vxn/config.toml
CTR=(ctr -n default)
# F0 has no vif: neither do these containers (and the bench needs no bridge)
NONET=(--annotation vxn.network=none)
WORK=$(mktemp -d /tmp/vxn-kbench.XXXXXX)

saved=0
if [ -f "$CONF" ]; then cp -p "$CONF" "$WORK/config.saved" && saved=1; fi
restore() {
  if [ $saved = 1 ]; then cp -p "$WORK/config.saved" "$CONF"; else rm -f "$CONF"; fi
  rm -rf "$WORK"
}
trap restore EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
since() { echo "$1 $(now)" | awk '{printf "%.3f\n", $2 - $1}'; }

for k in "${KINDS[@]}"; do
  for f in vmlinuz initramfs.cpio.gz; do
    [ -f "$DIR/$k/$f" ] || { echo "kernel-bench: missing $DIR/$k/$f" >&2; exit 1; }
  done
done
[ -f "$DIR/f0-initramfs.cpio.gz" ] || { echo "kernel-bench: missing $DIR/f0-initramfs.cpio.gz" >&2; exit 1; }

# use_kernel KIND: the shim's config names KIND's kernel and initramfs (a shim reads it at start).
use_kernel() {
  mkdir -p "$(dirname "$CONF")"
  {
    echo "kernel = \"$DIR/$1/vmlinuz\""
    echo "initramfs = \"$DIR/$1/initramfs.cpio.gz\""
    if [ $saved = 1 ]; then grep -vE '^[[:space:]]*(kernel|initramfs)[[:space:]]*=' "$WORK/config.saved"; fi
  } > "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

# f0 KIND I: one bare domain from create to gone; its wall time appended to $WORK/f0-KIND.
f0() {
  local k=$1 i=$2 cfg=$WORK/f0-$1-$2.cfg t0
  cat > "$cfg" <<EOF
name = "vxn-f0-$k-$i"
type = "pv"
kernel = "$DIR/$k/vmlinuz"
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
    since "$t0" >> "$WORK/f0-$k"
  else
    echo "F0 $k run $i: the domain did not power off cleanly: $(tr '\n' ' ' < "$WORK/f0.out")" >&2
    xl destroy "vxn-f0-$k-$i" > /dev/null 2>&1
  fi
}

# ctr_run KIND I: one `ctr run --rm ... /bin/true` through vxn with KIND's kernel.
ctr_run() {
  local k=$1 i=$2 t0
  use_kernel "$k"
  t0=$(now)
  if "${CTR[@]}" run --rm --runtime io.containerd.vxn.v2 "${NONET[@]}" "$IMG" "kbench-$k-$i" /bin/true < /dev/null > /dev/null 2>&1; then
    since "$t0" >> "$WORK/ctr-$k"
  else
    echo "ctr run $k run $i failed" >&2
  fi
}

# meminfo KIND: MemTotal and MemTotal - MemAvailable (MiB) inside a fresh container's VM.
meminfo() {
  use_kernel "$1"
  "${CTR[@]}" run --rm --runtime io.containerd.vxn.v2 "${NONET[@]}" "$IMG" "kbench-mem-$1" cat /proc/meminfo < /dev/null 2> /dev/null |
    awk '/^MemTotal:/ {t = $2} /^MemAvailable:/ {a = $2} END { if (t) printf "%d %d\n", t / 1024, (t - a) / 1024; else print "- -" }'
}

start=$(date '+%Y-%m-%d %H:%M:%S')
for k in "${KINDS[@]}"; do f0 "$k" 0; ctr_run "$k" 0; done # warm-up: page cache, image unpacked
: > "$WORK/f0-debian"; : > "$WORK/f0-vxn"; : > "$WORK/ctr-debian"; : > "$WORK/ctr-vxn"
for ((i = 1; i <= RUNS; i++)); do
  for k in "${KINDS[@]}"; do f0 "$k" "$i"; done
  for k in "${KINDS[@]}"; do ctr_run "$k" "$i"; done
done
for k in "${KINDS[@]}"; do meminfo "$k" > "$WORK/mem-$k"; done
sleep 1
journalctl -u containerd --since "$start" --no-pager -o cat > "$WORK/journal" 2> /dev/null

ready() {
  grep -E "kbench-$1-[1-9][0-9]*[ \"]" "$WORK/journal" | grep 'timing: agent ready' |
    sed -n 's/.*took_ms=\([0-9]*\).*/\1/p' | awk '{printf "%.3f\n", $1 / 1000}' | median
}

row() { printf '  %-40s %12s %12s %10s\n' "$@"; }
ratio() { echo "$1 $2" | awk '{ if ($1 + 0 > 0 && $2 != "-") printf "%.2f", $2 / $1; else printf "-" }'; }
echo "guest kernel: Debian's vs vxn's, interleaved, median of $RUNS (s)"
row "" debian vxn vxn/debian
f0d=$(median < "$WORK/f0-debian"); f0v=$(median < "$WORK/f0-vxn")
row "F0: bare PV domain, create to gone" "$f0d" "$f0v" "$(ratio "$f0d" "$f0v")"
cd_=$(median < "$WORK/ctr-debian"); cv=$(median < "$WORK/ctr-vxn")
row "ctr run --rm IMG /bin/true" "$cd_" "$cv" "$(ratio "$cd_" "$cv")"
rd=$(ready debian); rv=$(ready vxn)
row "agent ready after unpause" "$rd" "$rv" "$(ratio "$rd" "$rv")"
sd=$(stat -c %s "$DIR/debian/vmlinuz"); sv=$(stat -c %s "$DIR/vxn/vmlinuz")
row "kernel image (bytes)" "$sd" "$sv" "$(ratio "$sd" "$sv")"
id=$(stat -c %s "$DIR/debian/initramfs.cpio.gz"); iv=$(stat -c %s "$DIR/vxn/initramfs.cpio.gz")
row "initramfs (bytes)" "$id" "$iv" "$(ratio "$id" "$iv")"
read -r td ud < "$WORK/mem-debian"; read -r tv uv < "$WORK/mem-vxn"
row "guest MemTotal of 256 MiB (MiB)" "$td" "$tv" ""
row "guest memory in use after boot (MiB)" "$ud" "$uv" "$(ratio "$ud" "$uv")"
echo "  vxn/F0 (ctr run over the floor, same kernel): debian $(ratio "$f0d" "$cd_"), vxn $(ratio "$f0v" "$cv")"
echo "  runs: F0 debian $(wc -l < "$WORK/f0-debian")/$RUNS, vxn $(wc -l < "$WORK/f0-vxn")/$RUNS; ctr debian $(wc -l < "$WORK/ctr-debian")/$RUNS, vxn $(wc -l < "$WORK/ctr-vxn")/$RUNS"
