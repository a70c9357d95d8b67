# shellcheck shell=bash
# Arm lab: the QEMU VM's lifecycle (up / down / status / ssh). Xen is QEMU's -kernel (an arm64
# Image); dom0's kernel and initrd are two `-device guest-loader` modules, which QEMU lists
# in the DTB's /chosen for Xen. All virtio devices are virtio-mmio: Xen 4.17 on Arm gives
# dom0 no vPCI, so virtio-pci devices would not reach it.

ARM_BOOT_TIMEOUT=${VXN_LAB_BOOT_TIMEOUT:-900}
# -cpu max,pauth-impdef=on: dom0 ssh in ~1 min against ~1m45 with cortex-a57, whose guest
# kernels force KPTI and call firmware Spectre workarounds (traps into Xen); pauth-impdef
# is QEMU's cheap pointer-auth algorithm (the architected QARMA is slow under TCG)
ARM_CPU=${VXN_LAB_ARM_CPU:-max,pauth-impdef=on}

arm_qemu_args() {
  local xen linux ksz kaddr=0x49000000 iaddr snap=on
  [ "${VXN_LAB_PERSIST:-0}" = 1 ] && snap=off
  # Arm's dom0_mem is a plain size (x86's ",max:" form is not accepted)
  xen="dom0_mem=${VXN_LAB_ARM_DOM0_MEM:-1024M} dom0_max_vcpus=2 console=dtuart dtuart=/pl011@9000000 loglvl=all guest_loglvl=all noreboot"
  linux="console=hvc0 earlycon=xenboot root=/dev/vda rw"
  # RAM starts at 0x40000000. With -kernel and no -initrd QEMU puts the DTB at RAM + 128 MiB
  # (0x48000000): a module there is overwritten and Xen panics "Could not set up DOM0 guest
  # OS" with no other word. So the modules start above it; the initrd after the kernel,
  # 2 MiB-aligned (Debian's arm64 kernel is a ~33 MB uncompressed Image).
  ksz=$(stat -c %s "$BOOT/vmlinuz")
  iaddr=$(printf '0x%x' $(( (kaddr + ksz + 0x200000) & ~0x1fffff )))
  # shellcheck disable=SC2054 # commas inside QEMU option values
  QEMU_ARGS=(-M virt,virtualization=on,gic-version=3 -cpu "$ARM_CPU" -m "${VXN_LAB_ARM_MEM:-4G}" -smp 2
    -accel tcg,thread=multi,tb-size=512 -nodefaults -no-reboot -display none
    -kernel "$BOOT/xen" -append "$xen"
    -device "guest-loader,addr=$kaddr,kernel=$BOOT/vmlinuz,bootargs=$linux"
    -device "guest-loader,addr=$iaddr,initrd=$BOOT/initrd.img"
    -drive "if=none,id=hd0,file=$IMG,format=raw,cache=unsafe,snapshot=$snap"
    -device virtio-blk-device,drive=hd0
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-device,netdev=n0
    -fsdev "local,id=xfer,path=$XFER,security_model=none,readonly=on"
    -device virtio-9p-device,fsdev=xfer,mount_tag=vxnxfer
    -serial "file:$SERIAL" -monitor "unix:$WORK/monitor.sock,server,nowait"
    -pidfile "$PIDFILE" -daemonize)
}

arm_serial_tail() { echo "--- tail of $SERIAL:" >&2; tail -n "${1:-40}" "$SERIAL" 2>/dev/null | tr -d '\r' >&2 || true; }

# arm_wait_ssh T0: poll dom0's sshd; print when Xen's banner and dom0's ssh came (since T0).
arm_wait_ssh() {
  local t0=$1 deadline=$((SECONDS + ARM_BOOT_TIMEOUT)) xen=0
  while [ $SECONDS -lt $deadline ]; do
    if [ $xen = 0 ] && grep -q 'Xen version' "$SERIAL" 2>/dev/null; then
      echo "lab: up.xen-banner $(elapsed "$t0")s"; xen=1
    fi
    if dom0 true 2> /dev/null < /dev/null; then
      echo "lab: up.boot-to-ssh $(elapsed "$t0")s"
      return 0
    fi
    [ -n "$(qemu_pid)" ] || { arm_serial_tail; die "QEMU exited during boot"; }
    sleep 1
  done
  arm_serial_tail 60
  die "dom0 ssh not up after ${ARM_BOOT_TIMEOUT}s (QEMU still running: lab --arch aarch64 down)"
}

arm_up() {
  local t0
  if [ ! -f "$IMG" ] || [ ! -f "$BOOT/xen" ]; then die "no dom0 image (run: lab --arch aarch64 build)"; fi
  if [ -n "$(qemu_pid)" ]; then
    if dom0 true 2> /dev/null < /dev/null; then log "up: already up (pid $(qemu_pid))"; return 0; fi
    log "up: QEMU running (pid $(qemu_pid)), waiting for ssh"
    arm_wait_ssh "$(stat -c %Y "$PIDFILE")"
    return 0
  fi
  command -v qemu-system-aarch64 > /dev/null || die "qemu-system-aarch64 missing (run: lab --arch aarch64 deps)"
  arm_qemu_args
  rm -f "$SERIAL" "$PIDFILE"
  mkdir -p "$XFER"
  t0=$(now)
  # nice: TCG takes both cores; whatever else runs on the host keeps its share
  nice -n 19 qemu-system-aarch64 "${QEMU_ARGS[@]}" || die "QEMU failed to start (port $SSH_PORT busy? set VXN_LAB_ARM_SSH_PORT)"
  log "up: QEMU pid $(cat "$PIDFILE"), serial $SERIAL; waiting for dom0 ssh (deadline ${ARM_BOOT_TIMEOUT}s)"
  arm_wait_ssh "$t0"
  dom0 'xl info | grep -E "^(xen_version|nr_cpus|total_memory|free_memory)"' < /dev/null | sed 's/^/lab: up: /' >&2 || true
}

