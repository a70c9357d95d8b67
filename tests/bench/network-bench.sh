#!/bin/bash
# Network benchmark, run INSIDE a Xen dom0 (the lab: tests/lab/lab bench net), after
# `vxnctl network up`. One run, interleaved, so the numbers compare:
#  - TCP throughput dom0 -> container and container -> dom0 (busybox nc in the container,
#    a python3 socket in dom0 timing the bytes), beside dom0 -> dom0 over loopback;
#  - what the vif costs at create: `ctr run --rm IMG /bin/true` with the default network
#    and with the annotation vxn.network=none, alternating, medians.
# Usage: network-bench.sh [RUNS] [MIB]  (defaults 5 and 64). Prints numbers; never fails on speed.
set -u
RUNS=${1:-5}
MIB=${2:-64}
IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
RT=io.containerd.vxn.v2
CTR=(ctr -n default)
GW=10.0.100.1

now() { date +%s.%N; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
lease_of() { vxnctl network leases | awk -v o="default/$1" '$3 == o {print $1}'; }

echo "== TCP throughput, $MIB MiB per transfer (MB/s) =="
# dom0 -> dom0 over loopback: the same code, no vif
tcp-rate.py recv 127.0.0.1 5100 "$MIB" >/tmp/vxn-bench-lo &
sleep 1
tcp-rate.py send 127.0.0.1 5100 "$MIB" >/dev/null
wait
echo "  dom0 -> dom0 (loopback)      $(cat /tmp/vxn-bench-lo)"

# dom0 -> container: the container's nc reads and exits at EOF
"${CTR[@]}" run -d --runtime "$RT" "$IMG" bench-net-rx sh -c 'nc -l -p 5001 >/dev/null' >/dev/null
ip=$(lease_of bench-net-rx)
echo "  dom0 -> container ($ip)  $(tcp-rate.py send "$ip" 5001 "$MIB")"
"${CTR[@]}" task kill -s KILL bench-net-rx >/dev/null 2>&1
"${CTR[@]}" task delete bench-net-rx >/dev/null 2>&1
"${CTR[@]}" container rm bench-net-rx >/dev/null 2>&1

# container -> dom0: dom0 times the bytes as they arrive
tcp-rate.py recv "$GW" 5002 "$MIB" >/tmp/vxn-bench-tx &
"${CTR[@]}" run --rm --runtime "$RT" "$IMG" bench-net-tx sh -c \
  "sleep 1; dd if=/dev/zero bs=65536 count=$((MIB * 16)) 2>/dev/null | nc $GW 5002" >/dev/null 2>&1
wait
echo "  container -> dom0            $(cat /tmp/vxn-bench-tx)"
rm -f /tmp/vxn-bench-lo /tmp/vxn-bench-tx

echo "== create cost of the vif: ctr run --rm /bin/true, $RUNS runs each, alternating (s) =="
: >/tmp/vxn-bench-net; : >/tmp/vxn-bench-none
for ((i = 1; i <= RUNS; i++)); do
  for mode in net none; do
    ann=()
    [ $mode = none ] && ann=(--annotation vxn.network=none)
    t0=$(now)
    "${CTR[@]}" run --rm --runtime "$RT" "${ann[@]}" "$IMG" "bench-vif-$mode-$i" /bin/true >/dev/null 2>&1 ||
      echo "run $mode-$i failed" >&2
    echo "$t0 $(now)" | awk '{printf "%.3f\n", $2 - $1}' >>"/tmp/vxn-bench-$mode"
  done
done
net=$(median </tmp/vxn-bench-net)
none=$(median </tmp/vxn-bench-none)
echo "  with network (vif + lease + setup)  $net"
echo "  vxn.network=none                    $none"
echo "$net $none" | awk '{printf "  added by the network               %.3f s (%.2fx)\n", $1 - $2, $1 / $2}'
rm -f /tmp/vxn-bench-net /tmp/vxn-bench-none
