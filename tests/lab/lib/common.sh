# shellcheck shell=bash disable=SC2034 # settings used by the other lab files
# Shared settings and helpers for the vxn Xen lab. Sourced by tests/lab/lab and friends.

LAB_DIR=${LAB_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
REPO_DIR=${REPO_DIR:-$(cd "$LAB_DIR/../.." && pwd)}

# Everything big lives here, never in git.
WORK=${VXN_LAB_WORK:-/var/tmp/vxn-lab}
ROOTFS=$WORK/rootfs          # debootstrapped dom0 tree
IMG=$WORK/dom0.img           # raw ext4 image of $ROOTFS (QEMU's virtio disk)
BOOT=$WORK/boot              # xen, vmlinuz, initrd.img for QEMU's multiboot loader
GUEST=$WORK/guest            # DomU boot image (vmlinuz, initramfs.cpio.gz)
TESTIMG=$WORK/test-image     # OCI tar + raw ext4 of the busybox test rootfs
KEY=$WORK/id_ed25519         # root ssh key for dom0
XFER=$WORK/xfer             # shared read-only into dom0 (virtio-9p tag vxnxfer): fast pushes
PIDFILE=$WORK/qemu.pid
SERIAL=$WORK/serial.log
SSH_PORT=${VXN_LAB_SSH_PORT:-10122}

# The dom0-side binaries the lab builds and pushes (the shim, vxnctl, vxn-oci-runtime,
# vxn-crictl): cargo's release profile by default, as users install them.
# VXN_LAB_PROFILE=dev: the debug build instead, which `lab ci` uses because
# scripts/test.sh has built it already (a cold release build is ~6 minutes of CI); the
# suites check behaviour, and the benches always push release builds.
# set_lab_profile PROFILE: release or dev; sets LAB_PROFILE and HOST_BIN_DIR.
set_lab_profile() {
  case $1 in
    release) HOST_BIN_DIR=$REPO_DIR/target/release ;;
    dev) HOST_BIN_DIR=$REPO_DIR/target/debug ;;
    *) die "VXN_LAB_PROFILE: release or dev, not '$1'" ;;
  esac
  LAB_PROFILE=$1
}
set_lab_profile "${VXN_LAB_PROFILE:-release}"

# Where the guest image is installed in dom0 (the shim's default lookup path).
DOM0_GUEST_DIR=/usr/share/vxn/x86_64

log() { echo "lab: $*" >&2; }
die() { echo "lab: error: $*" >&2; exit 1; }

# now: wall clock with sub-second resolution (bash 5).
now() { echo "${EPOCHREALTIME/,/.}"; }
# elapsed T0: seconds since T0, one decimal.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# timed NAME CMD...: run CMD and print the phase timing line "lab: NAME Ns".
# Failures propagate (set -e is not suspended: no "||" around "$@").
timed() {
  local name=$1 t0
  shift
  t0=$(now)
  LAB_PHASE=$name
  "$@"
  echo "lab: $name $(elapsed "$t0")s"
  LAB_PHASE=
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, apt, chroot)"; }

# debian_mirror: the first non-security Debian URI of the host apt config.
# Read at run time so that no mirror hostname is ever written into the repo.
debian_mirror() {
  local u
  local all
  all=$( { grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
           grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
             sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } | grep -v -- -security || true)
  # prefer a URI ending in /debian; else any non-security Debian one
  u=$(grep -E '/debian/?$' <<< "$all" | head -1 || true)
  [ -n "$u" ] || u=$(grep -i debian <<< "$all" | head -1 || true)
  echo "$u"
}

# hash_of ARGS...: sha256 of the given strings and files (files by content).
hash_of() {
  local a
  for a in "$@"; do
    if [ -f "$a" ]; then sha256sum < "$a"; else printf '%s\n' "$a"; fi
  done | sha256sum | cut -c1-64
}

SSH_OPTS=(-i "$KEY" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes
  -o ServerAliveInterval=15 -o ServerAliveCountMax=8)

# dom0 CMD...: run CMD in dom0 as root (stdin passed through, exit code propagated).
# shellcheck disable=SC2029 # the command is meant to expand in dom0
dom0() { ssh "${SSH_OPTS[@]}" root@127.0.0.1 "$@"; }

# dom0_put SRC DST MODE [SRC DST MODE ...]: copy host files into dom0, in one ssh call.
# Data goes through the read-only virtio-9p share $XFER (~50 MB/s) rather than ssh
# (~2 MB/s under TCG). Each file is renamed into place, so running binaries can be replaced.
dom0_put() {
  local stage i=0 script q
  mkdir -p "$XFER"
  stage=$(mktemp -d "$XFER/put.XXXXXX")
  script="set -e; mountpoint -q /mnt/xfer || { mkdir -p /mnt/xfer; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro vxnxfer /mnt/xfer; }"
  while [ $# -ge 3 ]; do
    [ -f "$1" ] || { rm -rf "$stage"; die "no such file: $1"; }
    cp "$1" "$stage/$i"
    q=$(printf '%q' "$2")
    script+="; install -D -m $3 /mnt/xfer/${stage##*/}/$i $q.lab-tmp; mv -f $q.lab-tmp $q"
    i=$((i + 1))
    shift 3
  done
  [ $# = 0 ] || { rm -rf "$stage"; die "dom0_put: arguments come in SRC DST MODE triples"; }
  dom0 "$script" < /dev/null || { rm -rf "$stage"; die "copy into dom0 failed"; }
  rm -rf "$stage"
}

# qemu_pid: PID of the lab's QEMU if it is running (checked against its cmdline,
# so a recycled PID is never mistaken for ours); empty otherwise.
qemu_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 0
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
  if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$PIDFILE"; then echo "$pid"; fi
}

# write_file PATH: stdin to PATH, its directory made.
write_file() { mkdir -p "$(dirname "$1")"; cat > "$1"; }

# configure_xen_common ROOT: what both labs' dom0 trees need of Xen: guest console logs
# (xenconsoled), the backend modules at boot, and a marker on the console when
# multi-user is up (boot diagnostics in serial.log).
configure_xen_common() {
  local r=$1
  mkdir -p "$r/var/log/xen/console"
  grep -q '^XENCONSOLED_ARGS=' "$r/etc/default/xen" ||
    echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> "$r/etc/default/xen"
  # Xen backend modules at boot (the init script loads most of them; make sure)
  printf '%s\n' xen-evtchn xen-gntdev xen-gntalloc xen-blkback xen-netback xen-privcmd |
    write_file "$r/etc/modules-load.d/xen.conf"
  # marker on the console when multi-user is up (boot diagnostics in serial.log)
  write_file "$r/etc/systemd/system/lab-ready.service" <<'EOS'
[Unit]
Description=vxn lab ready marker
After=multi-user.target ssh.service containerd.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "VXN-LAB-READY $(cat /proc/uptime)" > /dev/console'
[Install]
WantedBy=multi-user.target
EOS
}
