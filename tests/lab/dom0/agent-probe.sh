#!/bin/bash
# Runs INSIDE dom0 (pushed by `lab probe`). Boots the vxn guest image by hand, without
# vxnctl: paused create with the agent channel and the busybox disk, a dom0-side channel
# reader, unpause, then shows the agent's console output (hvc0) and destroys the domain.
# Env: PROBE_SETTLE (s to keep watching after the agent's first line, default 8).
set -u
NAME=vxnprobe$(date +%s%N | cut -c10-15)   # unique: dom0 PIDs repeat across identical boots
CFG=/run/$NAME.cfg
SOCK=/run/vxn-test.sock
LOG=/var/log/xen/console/guest-$NAME.log
IMGDIR=/usr/share/vxn/x86_64
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
for f in $IMGDIR/vmlinuz $IMGDIR/initramfs.cpio.gz /root/busybox.ext4; do
  [ -f "$f" ] || { echo "PROBE: missing $f"; exit 1; }
done
rm -f "$SOCK" "$LOG"
# The dummy first channel works around Debian libxl 4.17's dropped-first-channel bug
# (the real channel must be devid 1 = /dev/hvc1 in the guest).
cat > "$CFG" <<EOC
name = "$NAME"
type = "pv"
kernel = "$IMGDIR/vmlinuz"
ramdisk = "$IMGDIR/initramfs.cpio.gz"
extra = "console=hvc0 quiet vxn.channel=/dev/hvc1"
memory = 128
vcpus = 1
channel = [ "connection=pty,name=vxn.dummy.0", "connection=socket,name=org.vxn.agent.0,path=$SOCK" ]
disk = [ "format=raw,vdev=xvdb,access=rw,target=/root/busybox.ext4" ]
on_poweroff = "destroy"
on_crash = "destroy"
EOC
T0=$(now)
xl create -p "$CFG" || { echo "PROBE: xl create failed"; exit 1; }
T1=$(now)
[ -S "$SOCK" ] && echo "PROBE: channel socket $SOCK present after create -p"
# dom0 side of the channel: print whatever the agent sends within the settle window
python3 - "$SOCK" "${PROBE_SETTLE:-8}" <<'EOP' &
import socket, sys, time
path, settle = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
for _ in range(100):
    try: s.connect(path); break
    except OSError: time.sleep(0.1)
else: print("PROBE-CHAN: cannot connect", path); sys.exit()
s.settimeout(40 + settle); buf = b""
try:
    while len(buf) < 4096:
        d = s.recv(4096)
        if not d: break
        buf += d; s.settimeout(settle)
except socket.timeout: pass
print("PROBE-CHAN: %d bytes from the agent: %r" % (len(buf), buf[:300]))
EOP
PY=$!
xl unpause "$NAME"
T2=$(now)
first=
for _ in $(seq 1 600); do
  if grep -qa vxn-agent "$LOG" 2> /dev/null; then first=$(now); break; fi
  xl domid "$NAME" > /dev/null 2>&1 || break
  sleep 0.1
done
# keep watching while the agent works (or until it powers the domain off)
for _ in $(seq 1 $((${PROBE_SETTLE:-8} * 10))); do xl domid "$NAME" > /dev/null 2>&1 || break; sleep 0.1; done
xl list
T3=$(now)
xl destroy "$NAME" 2> /dev/null && echo "PROBE: destroyed $NAME" || echo "PROBE: $NAME already gone"
T4=$(now)
wait "$PY" 2> /dev/null
echo "--- guest console ($LOG):"
tr -d '\r' < "$LOG" 2> /dev/null | grep -v '^$' | tail -60
echo "TIMING create(-p)=$(dt "$T0" "$T1")s unpause->agent-line=${first:+$(dt "$T2" "$first")s} destroy=$(dt "$T3" "$T4")s"
rm -f "$CFG"
if [ -n "$first" ]; then echo "PROBE: OK (agent logged on hvc0)"; else echo "PROBE: FAIL (no vxn-agent line on hvc0)"; exit 1; fi
