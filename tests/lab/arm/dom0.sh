# shellcheck shell=bash
# Arm lab: host packages (`deps`) and the arm64 dom0 image (`build`). The same recipe as
# tests/lab/lib/dom0.sh (debootstrap minbase in two stages, mkfs.ext4 -d, no loop mounts) for
# arm64: debootstrap --foreign on the host, its second stage in the arm64 chroot under
# qemu-user (binfmt). No Docker or Podman yet: containerd and runc only.

ARM_SUITE=bookworm
ARM_PKGS=linux-image-arm64,initramfs-tools,xen-hypervisor-4.17-arm64,xen-utils-4.17,xen-utils-common,containerd,runc,busybox-static,e2fsprogs,erofs-utils,iproute2,systemd-sysv,udev,kmod,openssh-server,procps,ca-certificates,less,util-linux,iputils-ping,nftables,dnsmasq-base,containernetworking-plugins,dbus
ARM_IMG_SIZE=${VXN_LAB_ARM_IMG_SIZE:-3G}
ARM_ROOTFS_STAMP=$WORK/stamp.rootfs
ARM_IMG_STAMP=$WORK/stamp.dom0img
# qemu-user-static: runs the arm64 chroot's binaries (debootstrap's second stage, chroot calls)
ARM_HOST_PKGS=(qemu-system-arm qemu-user-static debootstrap cpio e2fsprogs openssh-client gzip)

# arm_binfmt: the qemu-aarch64 binfmt handler registered and enabled. qemu-user-static 10.0
# ships /usr/lib/binfmt.d/qemu-aarch64.conf (flags F: the interpreter is opened at
# registration, nothing is copied into the chroot) but a host without systemd-binfmt
# running has it unregistered; older packages register through update-binfmts.
arm_binfmt() {
  local bm=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  mountpoint -q "$bm" || mount -t binfmt_misc binfmt_misc "$bm"
  if [ ! -e "$bm/qemu-aarch64" ]; then
    if [ -f "$conf" ]; then cat "$conf" > "$bm/register"
    elif command -v update-binfmts > /dev/null; then update-binfmts --enable qemu-aarch64
    else die "no qemu-aarch64 binfmt to register (qemu-user-static missing?)"; fi
  fi
  [ "$(head -1 "$bm/qemu-aarch64")" = enabled ] || echo 1 > "$bm/qemu-aarch64"
}

arm_deps() {
  need_root
  local missing=() p qv
  for p in "${ARM_HOST_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} != 0 ]; then
    log "deps: installing ${missing[*]}"
    # the x86 lab's QEMU comes from bookworm-backports (tests/lab/lib/deps.sh); bookworm's
    # qemu-system-arm 7.2 needs qemu-system-common 7.2 and cannot sit beside it
    qv=$(dpkg-query -W -f='${Version}' qemu-system-common 2>/dev/null || dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [[ " ${missing[*]} " == *" qemu-system-arm "* && "$qv" == *bpo12* ]]; then
      ensure_backports
      apt_install -t bookworm-backports qemu-system-arm
      missing=("${missing[@]/qemu-system-arm}")
    fi
    # shellcheck disable=SC2206 # drop the emptied entry
    missing=(${missing[@]})
    [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
  else
    log "deps: all host packages present"
  fi
  arm_binfmt
  command -v aarch64-linux-gnu-gcc > /dev/null ||
    log "deps: no aarch64 cross toolchain (for cross and guest-image: scripts/install-deps.sh --cross)"
}

# dom0_kver: the (only) kernel version in the dom0 tree.
dom0_kver() {
  local k
  k=$({ find "$ROOTFS/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null || true; } | sort -V | sed -n '$p')
  [ -n "$k" ] || die "no kernel in $ROOTFS (run: lab --arch aarch64 build)"
  echo "$k"
}

# arm_rootfs_complete: the tree has xl and every package of ARM_PKGS installed (what a
# rootfs from elsewhere, VXN_LAB_ARM_SEED or a stamp-less work dir, must have to be used).
arm_rootfs_complete() {
  local st=$ROOTFS/var/lib/dpkg/status p
  [ -x "$ROOTFS/usr/sbin/xl" ] && [ -f "$st" ] || return 1
  for p in ${ARM_PKGS//,/ }; do
    awk -v p="$p" '$0 == "Package: " p { f = 1; next } f && /^Status:/ { exit !($0 ~ / installed$/) } /^$/ { f = 0 } END { if (!f) exit 1 }' "$st" || return 1
  done
}

# arm_seed: with VXN_LAB_ARM_SEED=DIR, an empty work dir takes DIR's rootfs/ and debs/ (a copy:
# configuring this lab's dom0 must not change DIR) instead of ~10 min of debootstrap, and
# DIR's built guest kernels (kernel/aarch64-*: scripts/build-guest-kernel.sh's cache
# entries, found by key) instead of ~10 min of kernel build.
arm_seed() {
  local seed=${VXN_LAB_ARM_SEED:-} k
  [ -n "$seed" ] || return 0
  for k in "$seed"/kernel/aarch64-*; do
    if [ -f "$k/vmlinuz" ] && [ ! -e "$WORK/kernel/${k##*/}" ]; then
      mkdir -p "$WORK/kernel" && cp -a "$k" "$WORK/kernel/"
    fi
  done
  [ ! -e "$ROOTFS" ] || return 0
  [ -x "$seed/rootfs/usr/sbin/xl" ] || die "VXN_LAB_ARM_SEED=$seed has no arm64 dom0 rootfs"
  log "build: copying the dom0 tree and .deb cache of $seed"
  cp -a --reflink=auto "$seed/rootfs" "$ROOTFS"
  [ -d "$WORK/debs" ] || [ ! -d "$seed/debs" ] || cp -a --reflink=auto "$seed/debs" "$WORK/debs"
}

arm_remove_rootfs() {
  local m
  [ -e "$ROOTFS" ] || return 0
  { findmnt -rn -o TARGET | grep -F "$ROOTFS/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$ROOTFS"
}

# small initrd (MODULES=list, before the kernel's postinst makes the first one): virtio-mmio,
# not virtio-pci, is the transport of QEMU's virt machine here (Xen 4.17 gives dom0 no vPCI)
arm_small_initrd_config() {
  mkdir -p "$ROOTFS/etc/initramfs-tools/conf.d" "$ROOTFS/usr/share/initramfs-tools/modules.d"
  printf 'MODULES=list\nCOMPRESS=gzip\n' > "$ROOTFS/etc/initramfs-tools/conf.d/vxn-lab.conf"
  printf '%s\n' virtio_mmio virtio_pci virtio_blk ext4 crc32c_generic > "$ROOTFS/usr/share/initramfs-tools/modules.d/vxn-lab"
}

arm_debootstrap() {
  local want mirror t0
  want=$(hash_of "$ARM_SUITE" "$ARM_PKGS" arm64)
  arm_seed
  if [ "$(cat "$ARM_ROOTFS_STAMP" 2>/dev/null)" = "$want" ] && [ -x "$ROOTFS/usr/sbin/xl" ]; then
    log "build: rootfs up to date, skipping debootstrap"; return 0
  fi
  if arm_rootfs_complete; then
    log "build: $ROOTFS has every package: used as is"
    echo "$want" > "$ARM_ROOTFS_STAMP"; return 0
  fi
  arm_binfmt
  mirror=${VXN_LAB_MIRROR:-$(debian_mirror)}
  [ -n "$mirror" ] || die "no Debian mirror in the host apt config (set VXN_LAB_MIRROR)"
  log "build: debootstrap --arch arm64 $ARM_SUITE from $mirror (~10 min: the 2nd stage runs under qemu-user)"
  rm -f "$ARM_ROOTFS_STAMP" "$ARM_IMG_STAMP"
  arm_remove_rootfs
  mkdir -p "$WORK/debs"
  t0=$(now)
  nice -n 19 debootstrap --arch arm64 --foreign --variant=minbase --cache-dir="$WORK/debs" \
    --include="$ARM_PKGS" "$ARM_SUITE" "$ROOTFS" "$mirror" > "$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap (first stage) failed"; }
  echo "lab: build.debootstrap1 $(elapsed "$t0")s"
  arm_small_initrd_config
  t0=$(now)
  nice -n 19 chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >> "$WORK/debootstrap.log" 2>&1 ||
    { tail -40 "$ROOTFS/debootstrap/debootstrap.log" >&2 || true; die "debootstrap (second stage) failed"; }
  echo "lab: build.debootstrap2 $(elapsed "$t0")s"
  rm -f "$ROOTFS"/var/cache/apt/archives/*.deb
  echo "$want" > "$ARM_ROOTFS_STAMP"
}

# arm_configure: idempotent configuration of $ROOTFS, as tests/lab/lib/dom0.sh's for x86.
arm_configure() {
  local r=$ROOTFS tty kver
  echo vxn-dom0-arm > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 vxn-dom0-arm\n' > "$r/etc/hosts"
  printf '/dev/vda / ext4 defaults,noatime 0 1\n' > "$r/etc/fstab"
  chroot "$r" passwd -d root > /dev/null
  # hvc0: dom0's console under Xen (Xen owns the PL011); ttyAMA0: the PL011 without Xen
  for tty in hvc0 ttyAMA0; do
    write_file "$r/etc/systemd/system/serial-getty@$tty.service.d/autologin.conf" <<'EOS'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I $TERM
EOS
  done
  printf '[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n' | write_file "$r/etc/systemd/network/10-dhcp.network"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C vxn-lab-arm64 -f "$KEY"
  install -d -m 700 "$r/root/.ssh"
  install -m 600 "$KEY.pub" "$r/root/.ssh/authorized_keys"
  printf 'PermitRootLogin prohibit-password\nUseDNS no\n' | write_file "$r/etc/ssh/sshd_config.d/vxn-lab.conf"
  configure_xen_common "$r"
  mkdir -p "$r$DOM0_GUEST_DIR" "$r/usr/local/bin"
  chroot "$r" systemctl enable systemd-networkd lab-ready.service containerd > /dev/null 2>&1
  chroot "$r" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer > /dev/null 2>&1 || true
  # a tree debootstrapped before the small-initrd config was in place: make the small one
  kver=$(dom0_kver)
  if [ ! -f "$r/usr/share/initramfs-tools/modules.d/vxn-lab" ] || [ "$(stat -c %s "$r/boot/initrd.img-$kver")" -gt 20000000 ]; then
    arm_small_initrd_config
    chroot "$r" update-initramfs -u -k "$kver" > /dev/null 2>&1 || die "update-initramfs in the dom0 rootfs failed"
  fi
}

# arm_boot_files: Xen (/boot/xen-4.17-arm64 has an arm64 Image header: QEMU's -kernel loads it
# as is, no multiboot), dom0's kernel (an uncompressed Image) and its initrd.
arm_boot_files() {
  local kver xen
  kver=$(dom0_kver)
  xen=$(find "$ROOTFS/boot" -maxdepth 1 -name 'xen-4.17*-arm64' | sort | sed -n 1p)
  [ -n "$xen" ] || die "no /boot/xen-4.17*-arm64 in the dom0 rootfs"
  mkdir -p "$BOOT"
  cp "$xen" "$BOOT/xen"
  cp "$ROOTFS/boot/vmlinuz-$kver" "$BOOT/vmlinuz"
  cp "$ROOTFS/boot/initrd.img-$kver" "$BOOT/initrd.img"
}

arm_build() {
  need_root
  local want t0
  mkdir -p "$WORK"
  arm_debootstrap
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C vxn-lab-arm64 -f "$KEY"
  want=$(hash_of "$(cat "$ARM_ROOTFS_STAMP")" "$ARM_DIR/dom0.sh" "$(declare -f configure_xen_common)" "$KEY.pub" "$ARM_IMG_SIZE")
  if [ -f "$IMG" ] && [ -f "$BOOT/xen" ] && [ "$(cat "$ARM_IMG_STAMP" 2>/dev/null)" = "$want" ]; then
    log "build: dom0 image up to date ($IMG)"; return 0
  fi
  rm -f "$ARM_IMG_STAMP"
  arm_configure
  arm_boot_files
  t0=$(now)
  rm -f "$IMG"
  mkfs.ext4 -q -F -L vxn-dom0 -d "$ROOTFS" "$IMG" "$ARM_IMG_SIZE" > /dev/null
  echo "lab: build.mkfs $(elapsed "$t0")s"
  echo "$want" > "$ARM_IMG_STAMP"
  log "build: $IMG ($(du -sh "$IMG" | cut -f1) used), rootfs $(du -sh "$ROOTFS" | cut -f1)"
}
