#!/bin/bash
# Docker network benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench engine-net):
# TCP throughput on one Docker user network, for runc and for vxn in the same run,
# interleaved so the numbers compare:
#  - dom0 -> container: tcp-rate.py in dom0 sends MIB MiB to the container's busybox nc;
#  - container -> container: busybox dd | nc from one container to another's nc, timed in
#    the sender until nc is done.
# Usage: engine-net-bench.sh [RUNS] [MIB]  (defaults 3 and 64). Prints numbers (MB/s, medians
# and the vxn/runc ratio); never fails on speed.
set -u
RUNS=${1:-3}
MIB=${2:-64}
IMG=${VXN_TEST_IMAGE:-vxn-test:latest}
NET=vxn-bench-net
D=(timeout 600 docker)

median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }

ip_of() { "${D[@]}" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
rm_all() { "${D[@]}" rm -f bench-rx bench-tx >/dev/null 2>&1; }

"${D[@]}" network rm $NET >/dev/null 2>&1
"${D[@]}" network create $NET >/dev/null || { echo "docker network create failed" >&2; exit 1; }
trap 'rm_all; "${D[@]}" network rm $NET >/dev/null 2>&1' EXIT
for rt in runc vxn; do : >"/tmp/bench-$rt-in"; : >"/tmp/bench-$rt-cc"; done
for ((i = 1; i <= RUNS; i++)); do
  for rt in runc vxn; do
    rm_all
    "${D[@]}" run -d --runtime $rt --network $NET --name bench-rx "$IMG" \
      sh -c 'while :; do nc -l -p 5001 >/dev/null; done' >/dev/null
    rx=$(ip_of bench-rx)
    tcp-rate.py send "$rx" 5001 "$MIB" >>"/tmp/bench-$rt-in"
    # timed in the sender by its /proc/uptime (busybox here has no date +%N nor dd rate)
    "${D[@]}" run --rm --runtime $rt --network $NET --name bench-tx "$IMG" sh -c \
      "sleep 1; t0=\$(cut -d' ' -f1 /proc/uptime)
       dd if=/dev/zero bs=65536 count=$((MIB * 16)) 2>/dev/null | nc $rx 5001
       t1=\$(cut -d' ' -f1 /proc/uptime); echo \$t0 \$t1" |
      awk -v mib="$MIB" '$2 > $1 {printf "%.1f\n", mib * 1.048576 / ($2 - $1)}' >>"/tmp/bench-$rt-cc"
  done
done
rm_all
echo "== TCP throughput on a Docker user network, $MIB MiB per transfer, $RUNS runs (MB/s, medians) =="
printf '  %-24s %10s %10s %8s\n' path runc vxn vxn/runc
for p in in:dom0-\>container cc:container-\>container; do
  k=${p%%:*}
  r=$(median <"/tmp/bench-runc-$k")
  v=$(median <"/tmp/bench-vxn-$k")
  ratio=$(echo "$v $r" | awk '$2 > 0 {printf "%.2f", $1 / $2; exit} {print "-"}')
  printf '  %-24s %10s %10s %8s\n' "${p#*:}" "$r" "$v" "$ratio"
done
rm -f /tmp/bench-runc-* /tmp/bench-vxn-*
