# shellcheck shell=bash
# `lab guest-image`: the DomU boot image = a kernel and an initramfs whose /init is the static
# vxn-agent. Two kernels (VXN_GUEST_KERNEL):
#   vxn     (default) vxn's own kernel, built from Debian's linux-source-6.1 by
#           scripts/build-guest-kernel.sh (kernel/*.config): everything built in, no modules
#   debian  dom0's own Debian kernel (PV-capable) plus the modules the agent needs
# Contract with the agent:
#   /init                         the agent (0755); no shell, no busybox
#   /dev /proc /sys /run /tmp /mnt /etc/vxn   empty directories
#   /lib/modules/<kver>/<path>.ko uncompressed modules, same relative paths as the kernel tree
#   /etc/vxn/modules.list         those paths in load order (dependencies first); debian only
# Output: $GUEST/<kind>/{vmlinuz,initramfs.cpio.gz}; the chosen kind is also $GUEST/{vmlinuz,
# initramfs.cpio.gz}, which push installs in dom0 at /usr/share/vxn/x86_64/.

GUEST_KERNEL=${VXN_GUEST_KERNEL:-vxn}
KERNEL_CACHE=${VXN_KERNEL_CACHE:-$WORK/kernel}

# Modules the agent needs (disk, network, 9p, ext4, its vchan: evtchn + gntalloc); dependencies and softdeps are added
# from the kernel's own metadata. crc32c_generic explicitly: ext4/jbd2 get crc32c through the
# crypto API at mount time, which a module-less initramfs cannot autoload.
GUEST_MODULES=${VXN_GUEST_MODULES:-crc32c_generic xen-blkfront xen-netfront 9pnet_xen 9p ext4 xen-evtchn xen-gntalloc}
AGENT_BIN_DEFAULT=$REPO_DIR/target/x86_64-unknown-linux-gnu/release/vxn-agent

# agent_sources_newer BIN: true if any agent input is newer than BIN.
agent_sources_newer() {
  local src
  for src in guest-agent runtime-core Cargo.toml Cargo.lock; do
    [ -e "$REPO_DIR/$src" ] || continue
    if [ -n "$(find "$REPO_DIR/$src" -newer "$1" -not -path '*/target/*' -print -quit)" ]; then return 0; fi
  done
  return 1
}

# agent_bin: path of the static agent; built with cargo when missing or stale
# (unless VXN_AGENT_BIN names a prebuilt one).
agent_bin() {
  local bin=${VXN_AGENT_BIN:-}
  if [ -n "$bin" ]; then
    [ -f "$bin" ] || die "VXN_AGENT_BIN=$bin does not exist"
  else
    bin=$AGENT_BIN_DEFAULT
    if [ ! -f "$bin" ] || agent_sources_newer "$bin"; then
      command -v cargo > /dev/null || die "cargo not found (needed to build vxn-agent)"
      log "guest-image: building vxn-agent (static)"
      # The project's own recipe when present: same RUSTFLAGS as every other agent build,
      # so cargo never rebuilds the dependency graph for a flag change.
      if [ -x "$REPO_DIR/scripts/build-agent.sh" ]; then
        "$REPO_DIR/scripts/build-agent.sh" > /dev/null || die "scripts/build-agent.sh failed"
      else
        (cd "$REPO_DIR" && RUSTFLAGS='-C target-feature=+crt-static' \
          cargo build --release --target x86_64-unknown-linux-gnu -p vxn-agent) >&2 ||
          die "cargo build of vxn-agent failed"
      fi
      [ -f "$bin" ] || die "cargo did not produce $bin"
    fi
  fi
  # a dynamically linked /init cannot start: there is no libc in the initramfs
  if LC_ALL=C ldd "$bin" 2> /dev/null | grep -q '=>'; then
    die "$bin is dynamically linked (build with RUSTFLAGS='-C target-feature=+crt-static')"
  fi
  echo "$bin"
}

# module_closure KVER: the module files (paths relative to /lib/modules/KVER, as they are in
# the tree, maybe compressed) in load order, dependencies first. modprobe --show-depends
# follows modules.dep and softdeps and prints in load order; keeping the first occurrence
# of each module across the lists preserves that order. Built-in modules are omitted.
module_closure() {
  local kver=$1 m
  for m in $GUEST_MODULES; do
    chroot "$ROOTFS" modprobe --show-depends --set-version="$kver" "$m" ||
      die "module $m not found for kernel $kver"
  done | awk -v pre="/lib/modules/$kver/" '$1 == "insmod" { p = $2; sub("^" pre, "", p); if (!seen[p]++) print p }'
}

# install_module KVER REL DEST: copy one module into the initramfs tree, uncompressed.
install_module() {
  local src=$ROOTFS/lib/modules/$1/$2 dst=$3/lib/modules/$1/${2%.ko*}.ko
  mkdir -p "$(dirname "$dst")"
  case $2 in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) xz -dc "$src" > "$dst" ;;
    *.ko.zst) zstd -qdc "$src" > "$dst" ;;
    *.ko.gz) gzip -dc "$src" > "$dst" ;;
    *) die "unexpected module file $2" ;;
  esac
}

# build_initramfs AGENT KVER MODULES OUT: assemble the tree and pack a reproducible cpio.
build_initramfs() {
  local agent=$1 kver=$2 mods=$3 out=$4 tree=$GUEST/tree rel
  rm -rf "$tree"
  mkdir -p "$tree"/{dev,proc,sys,run,tmp,mnt,etc/vxn}
  chmod 1777 "$tree/tmp"
  install -m 0755 "$agent" "$tree/init"
  if [ -n "$mods" ]; then
    mkdir -p "$tree/lib/modules/$kver"
    : > "$tree/etc/vxn/modules.list"
    for rel in $mods; do
      install_module "$kver" "$rel" "$tree"
      echo "${rel%.ko*}.ko" >> "$tree/etc/vxn/modules.list"
    done
  fi
  pack_cpio "$tree" "$out"
}

# pack_cpio TREE OUT: a reproducible gzip'd newc cpio of TREE (owner root, mtime 0).
pack_cpio() {
  find "$1" -exec touch -h -d @0 {} +
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc -R 0:0 --reproducible --quiet | gzip -9 -n) > "$2.tmp"
  mv -f "$2.tmp" "$2"
}

# vxn_kernel: build (or find cached) vxn's kernel; prints its path.
vxn_kernel() {
  "$REPO_DIR/scripts/build-guest-kernel.sh" --arch x86_64 --cache "$KERNEL_CACHE" ||
    die "the vxn guest kernel did not build (scripts/build-guest-kernel.sh)"
}

# guest_image_kind KIND: $GUEST/KIND/{vmlinuz,initramfs.cpio.gz}, rebuilt when an input changed.
guest_image_kind() {
  local kind=$1 agent kver mods="" kernel want dir=$GUEST/$1
  agent=$(agent_bin)
  case $kind in
    vxn)
      kernel=$(vxn_kernel)
      kver=$(cat "$(dirname "$kernel")/release") ;;
    debian)
      [ -d "$ROOTFS/lib/modules" ] || die "no dom0 rootfs (run: lab build)"
      kver=$(dom0_kver)
      kernel=$ROOTFS/boot/vmlinuz-$kver
      mods=$(module_closure "$kver") ;;
    *) die "VXN_GUEST_KERNEL=$kind: vxn or debian" ;;
  esac
  want=$(hash_of "$agent" "$kernel" "$kver" "$mods" "$LAB_DIR/lib/guest.sh")
  mkdir -p "$dir"
  if [ -f "$dir/initramfs.cpio.gz" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$want" ]; then
    log "guest-image: $kind up to date"
  else
    cp "$kernel" "$dir/vmlinuz"
    build_initramfs "$agent" "$kver" "$mods" "$dir/initramfs.cpio.gz"
    echo "$want" > "$dir/stamp"
    log "guest-image: $kind: agent $agent, kernel $kver${mods:+, modules: $(echo "$mods" | xargs -n1 basename | tr '\n' ' ')}"
  fi
  log "guest-image: $kind: vmlinuz $(stat -c %s "$dir/vmlinuz") bytes, initramfs.cpio.gz $(stat -c %s "$dir/initramfs.cpio.gz") bytes (agent $(stat -c %s "$agent") bytes)"
}

# f0_image: the raw-Xen floor's initramfs: busybox and an /init that prints and powers off.
f0_image() {
  local tree=$GUEST/f0-tree bb
  bb=$(command -v busybox) || die "busybox not found (lab deps)"
  rm -rf "$tree" && mkdir -p "$tree/bin"
  cp "$bb" "$tree/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox echo vxn-f0-up\n/bin/busybox poweroff -f\n' > "$tree/init"
  chmod 0755 "$tree/init"
  pack_cpio "$tree" "$GUEST/f0-initramfs.cpio.gz"
}

cmd_guest_image() {
  guest_image_kind "$GUEST_KERNEL"
  cp "$GUEST/$GUEST_KERNEL/vmlinuz" "$GUEST/vmlinuz.tmp" && mv -f "$GUEST/vmlinuz.tmp" "$GUEST/vmlinuz"
  cp "$GUEST/$GUEST_KERNEL/initramfs.cpio.gz" "$GUEST/initramfs.tmp" && mv -f "$GUEST/initramfs.tmp" "$GUEST/initramfs.cpio.gz"
  log "guest-image: dom0's default guest kernel is $GUEST_KERNEL (VXN_GUEST_KERNEL=vxn|debian)"
}
