# shellcheck shell=bash
# `lab build`: the dom0 image. Debian bookworm (debootstrap minbase) + Xen 4.17 + containerd,
# Docker and Podman (engine tests: `docker|podman run --runtime vxn`),
# configured for unattended use (ssh key, DHCP, guest console logs), as a raw ext4 image
# made with `mkfs.ext4 -d` (no loop mounts), plus the boot files for QEMU's multiboot loader.

DOM0_SUITE=bookworm
DOM0_PKGS=linux-image-amd64,initramfs-tools,xen-hypervisor-4.17-amd64,xen-utils-4.17,xen-utils-common,qemu-system-xen,containerd,runc,busybox-static,e2fsprogs,erofs-utils,iproute2,systemd-sysv,udev,kmod,openssh-server,procps,ca-certificates,less,util-linux,iputils-ping,python3,nftables,dnsmasq-base,containernetworking-plugins
# Docker 20.10 (uses the system containerd) and Podman 4.3 (conmon; crun and runc both present);
# dbus: runc and crun reach systemd over it for the systemd cgroup driver both engines use;
# dnsname: the CNI plugin that gives Podman's user networks names (dnsmasq on the gateway)
DOM0_PKGS+=,docker.io,podman,conmon,crun,golang-github-containers-common,tini,dbus
DOM0_PKGS+=,golang-github-containernetworking-plugin-dnsname
DOM0_IMG_SIZE=${VXN_LAB_IMG_SIZE:-4G}
ROOTFS_STAMP=$WORK/stamp.rootfs
IMG_STAMP=$WORK/stamp.dom0img

# dom0_kver: the (only) kernel version installed in the dom0 tree.
dom0_kver() {
  local k
  k=$({ find "$ROOTFS/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null || true; } | sort -V | sed -n '$p')
  [ -n "$k" ] || die "no kernel in $ROOTFS (run: lab build)"
  echo "$k"
}

# debootstrap_rootfs: (re)create $ROOTFS unless it exists with the same package set.
# Two stages, so that the small initrd's config is in place before the kernel's postinst
# makes the first initrd (Debian's default is a 36 MB MODULES=most one, made twice).
# One retry from the cached .debs: a configure step that failed once (a mirror hiccup, a
# loaded machine) is not worth a failed CI run; what failed is printed either way.
debootstrap_rootfs() {
  local want mirror t0 try
  want=$(hash_of "$DOM0_SUITE" "$DOM0_PKGS")
  if [ -x "$ROOTFS/usr/sbin/xl" ] && [ "$(cat "$ROOTFS_STAMP" 2>/dev/null)" = "$want" ]; then
    log "build: rootfs up to date, skipping debootstrap"
    return 0
  fi
  mirror=${VXN_LAB_MIRROR:-$(debian_mirror)}
  [ -n "$mirror" ] || die "no Debian mirror in the host apt config (set VXN_LAB_MIRROR)"
  log "build: debootstrap $DOM0_SUITE from $mirror (~2 min cold)"
  t0=$(now)
  rm -f "$ROOTFS_STAMP" "$IMG_STAMP"
  mkdir -p "$WORK/debs"
  for try in 1 2; do
    debootstrap_once "$mirror" && break
    debootstrap_failed
    [ "$try" = 2 ] && die "debootstrap failed twice (log: $WORK/debootstrap.log)"
    log "build: debootstrap failed; once more from the cached packages"
  done
  rm -f "$ROOTFS"/var/cache/apt/archives/*.deb   # debootstrap leaves ~166 MB of .debs behind
  echo "$want" > "$ROOTFS_STAMP"
  echo "lab: build.debootstrap $(elapsed "$t0")s"
}

# debootstrap_once MIRROR: a fresh $ROOTFS, both stages.
debootstrap_once() {
  remove_rootfs
  debootstrap --foreign --variant=minbase --cache-dir="$WORK/debs" --include="$DOM0_PKGS" \
    "$DOM0_SUITE" "$ROOTFS" "$1" > "$WORK/debootstrap.log" 2>&1 || return 1
  small_initrd_config
  chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >> "$WORK/debootstrap.log" 2>&1
}

# debootstrap_failed: what went wrong, from both logs, and the space left.
debootstrap_failed() {
  tail -15 "$WORK/debootstrap.log" >&2
  if [ -f "$ROOTFS/debootstrap/debootstrap.log" ]; then
    echo "lab: the failing step, from $ROOTFS/debootstrap/debootstrap.log:" >&2
    grep -n -B3 -A12 -iE 'error|fail|no space' "$ROOTFS/debootstrap/debootstrap.log" | tail -60 >&2 ||
      tail -40 "$ROOTFS/debootstrap/debootstrap.log" >&2
  fi
  df -h "$WORK" >&2 || true
}

# remove_rootfs: $ROOTFS gone, with whatever a failed second stage left mounted in it.
remove_rootfs() {
  local m
  [ -e "$ROOTFS" ] || return 0
  # (no mount left is the usual case: grep's "no match" must not fail the pipeline)
  { findmnt -rn -o TARGET | grep -F "$ROOTFS/" || true; } | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$ROOTFS"
}

# write_unit PATH: stdin -> PATH (creating its directory).
# configure_dom0: idempotent configuration of $ROOTFS.
configure_dom0() {
  local r=$ROOTFS tty
  echo vxn-dom0 > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 vxn-dom0\n' > "$r/etc/hosts"
  printf '/dev/vda / ext4 defaults,noatime 0 1\n' > "$r/etc/fstab"
  chroot "$r" passwd -d root > /dev/null
  # autologin root on the Xen console (hvc0) and the serial line (interactive debugging)
  for tty in hvc0 ttyS0; do
    write_file "$r/etc/systemd/system/serial-getty@$tty.service.d/autologin.conf" <<'EOS'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I $TERM
EOS
  done
  # network: DHCP on any ethernet (QEMU user-net)
  printf '[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n' | write_file "$r/etc/systemd/network/10-dhcp.network"
  # ssh: key-only root login with the lab key
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C vxn-lab -f "$KEY"
  install -d -m 700 "$r/root/.ssh"
  install -m 600 "$KEY.pub" "$r/root/.ssh/authorized_keys"
  printf 'PermitRootLogin prohibit-password\nUseDNS no\n' | write_file "$r/etc/ssh/sshd_config.d/vxn-lab.conf"
  # xenconsoled: log guest consoles to /var/log/xen/console/guest-<name>.log
  # (Debian's /etc/init.d/xen ignores XENCONSOLED_TRACE but passes $XENCONSOLED_ARGS)
  configure_xen_common "$r"
  configure_engines
  small_dom0_initrd
  mkdir -p "$r/usr/share/vxn/x86_64" "$r/usr/local/bin"
  chroot "$r" systemctl enable systemd-networkd lab-ready.service containerd > /dev/null 2>&1
  # timers that would burn emulated CPU in the middle of a test run
  chroot "$r" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer > /dev/null 2>&1 || true
}

# configure_engines: Docker and Podman next to vxn's own networking (tests/lab/README.md),
# set up as a Docker host's: dockerd with its defaults ("iptables": true, docker0), so
# its FORWARD chain, br_netfilter and NAT rules are there as on a user's machine, and
# `vxnctl network up` must let xenbr0 through Docker's DOCKER-USER chain (net_docker_host).
# install-engine-config.sh (lab push) adds the vxn runtime to this daemon.json. dockerd
# is started on demand by docker.socket (idle dom0 memory); containerd stays the system
# one. Podman's packaged units would run `podman system service` and `podman start
# --all` at every boot: only its socket stays.
configure_engines() {
  local r=$ROOTFS
  write_file "$r/etc/docker/daemon.json" <<< '{}'
  chroot "$r" systemctl disable docker.service > /dev/null 2>&1 || true
  chroot "$r" systemctl enable docker.socket > /dev/null 2>&1
  chroot "$r" systemctl disable podman.service podman-restart.service podman-auto-update.service \
    podman-auto-update.timer > /dev/null 2>&1 || true
}

# small_initrd_config: Debian's default MODULES=most initrd is 36 MB and costs ~10 s per
# boot under TCG (unpack + udev). The dom0 only needs virtio disk + ext4 to mount its root.
SMALL_INITRD_CONF='MODULES=list
COMPRESS=gzip'
small_initrd_config() {
  write_file "$ROOTFS/etc/initramfs-tools/conf.d/vxn-lab.conf" <<< "$SMALL_INITRD_CONF"
  printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic |
    write_file "$ROOTFS/usr/share/initramfs-tools/modules.d/vxn-lab"
}

# small_dom0_initrd: the small initrd in a rootfs debootstrapped before small_initrd_config
# ran ahead of the kernel's postinst; a no-op otherwise.
small_dom0_initrd() {
  local conf=$ROOTFS/etc/initramfs-tools/conf.d/vxn-lab.conf
  [ "$(cat "$conf" 2>/dev/null)" = "$SMALL_INITRD_CONF" ] && return 0
  small_initrd_config
  chroot "$ROOTFS" update-initramfs -u -k "$(dom0_kver)" > /dev/null 2>&1 ||
    { rm -f "$conf"; die "update-initramfs in the dom0 rootfs failed"; }
}

# extract_boot_files: the hypervisor (gunzipped: QEMU's multiboot loader wants the ELF),
# the dom0 kernel and its initrd.
extract_boot_files() {
  local kver xengz
  kver=$(dom0_kver)
  mkdir -p "$BOOT"
  xengz=$(find "$ROOTFS/boot" -maxdepth 1 -name 'xen-4.17*-amd64.gz' | sort | sed -n 1p)
  [ -n "$xengz" ] || die "no /boot/xen-4.17*-amd64.gz in the dom0 rootfs"
  zcat "$xengz" > "$BOOT/xen"
  cp "$ROOTFS/boot/vmlinuz-$kver" "$BOOT/vmlinuz"
  cp "$ROOTFS/boot/initrd.img-$kver" "$BOOT/initrd.img"
}

# One build at a time: scripts/test.sh starts one in the background early and `lab ci`
# then waits for it here (a second finds the image up to date). In a subshell, so the
# lock's descriptor does not outlive the build (QEMU, started later, would inherit it).
cmd_build() {
  need_root
  mkdir -p "$WORK"
  (
    exec 8> "$WORK/.build.lock"
    flock 8
    build_dom0_image
  )
}
build_dom0_image() {
  local want t0
  debootstrap_rootfs
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C vxn-lab -f "$KEY"
  # the image depends on the rootfs, this file (the configuration) and the ssh key
  want=$(hash_of "$(cat "$ROOTFS_STAMP")" "$LAB_DIR/lib/dom0.sh" "$(declare -f configure_xen_common)" "$KEY.pub" "$DOM0_IMG_SIZE")
  if [ -f "$IMG" ] && [ -f "$BOOT/xen" ] && [ "$(cat "$IMG_STAMP" 2>/dev/null)" = "$want" ]; then
    log "build: dom0 image up to date ($IMG)"
    return 0
  fi
  rm -f "$IMG_STAMP"
  configure_dom0
  extract_boot_files
  t0=$(now)
  rm -f "$IMG"
  mkfs.ext4 -q -F -L vxn-dom0 -d "$ROOTFS" "$IMG" "$DOM0_IMG_SIZE" > /dev/null
  echo "lab: build.mkfs $(elapsed "$t0")s"
  echo "$want" > "$IMG_STAMP"
  log "build: $(du -sh --apparent-size "$IMG" | cut -f1) image ($(du -sh "$IMG" | cut -f1) used), rootfs $(du -sh "$ROOTFS" | cut -f1)"
}
