# shellcheck shell=bash
# Lifecycle of the lab VM: up / down / status / ssh / logs / push.
# Xen is QEMU's multiboot kernel; the dom0 kernel and initrd are its modules. TCG only:
# /dev/kvm on these machines is kvm_pvm, which cannot run Xen (see README.md).

BOOT_TIMEOUT=${VXN_LAB_BOOT_TIMEOUT:-300}
# The emulated CPU: `max` without the XSAVE family. With XSAVE/AVX under TCG, userland
# registers in dom0 and DomUs came back corrupted after Xen context switches (Go binaries
# crashing in init, "malloc(): corrupted top size", the agent segfaulting right after a
# memcpy), most often after `xl pause`/`xl unpause`. Without XSAVE Xen and the guests
# save FPU state with FXSAVE (SSE), which TCG gets right.
LAB_CPU=max,-xsave,-xsaveopt,-xsavec,-xsaves,-avx,-avx2,-fma,-f16c,-pku,-mpx

qemu_args() {
  local mem=${VXN_LAB_MEM:-6144} dom0_mem=${VXN_LAB_DOM0_MEM:-1536M} snap=on xen linux initrd
  # dom0 disk writes are discarded unless VXN_LAB_PERSIST=1: every boot starts from the image
  [ "${VXN_LAB_PERSIST:-0}" = 1 ] && snap=off
  xen="dom0_mem=$dom0_mem,max:$dom0_mem dom0_max_vcpus=2 console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all noreboot"
  # apparmor=0: dom0 has no apparmor_parser (Docker refuses to run a container when the
  # kernel's AppArmor is on and it cannot load its profile)
  linux="root=/dev/vda rw console=hvc0 earlyprintk=xen apparmor=0"
  # -initrd takes a comma-separated module list: literal commas must be doubled
  initrd="${BOOT//,/,,}/vmlinuz ${linux//,/,,},${BOOT//,/,,}/initrd.img"
  # shellcheck disable=SC2054 # commas inside QEMU option values
  QEMU_ARGS=(-accel tcg,thread=multi,tb-size=512 -cpu "${VXN_LAB_CPU:-$LAB_CPU}" -m "$mem" -smp 2 -no-reboot -nodefaults
    -kernel "$BOOT/xen" -append "$xen" -initrd "$initrd"
    -drive "file=$IMG,format=raw,if=virtio,cache=unsafe,snapshot=$snap"
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-pci,netdev=n0
    -virtfs "local,path=$XFER,mount_tag=vxnxfer,security_model=none,readonly=on"
    -display none -serial "file:$SERIAL" -monitor "unix:$WORK/monitor.sock,server,nowait"
    -pidfile "$PIDFILE" -daemonize)
}

serial_tail() { echo "--- tail of $SERIAL:" >&2; tail -n "${1:-40}" "$SERIAL" 2>/dev/null | tr -d '\r' >&2 || true; }

# wait_ssh: poll dom0's sshd until the deadline; fail fast if QEMU dies.
wait_ssh() {
  local t0=$1 deadline=$((SECONDS + BOOT_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if dom0 true 2> /dev/null < /dev/null; then
      echo "lab: up.boot-to-ssh $(elapsed "$t0")s"
      return 0
    fi
    [ -n "$(qemu_pid)" ] || { serial_tail; die "QEMU exited during boot"; }
    sleep 1
  done
  serial_tail 60
  die "dom0 ssh not up after ${BOOT_TIMEOUT}s (QEMU still running: lab down to stop it)"
}

cmd_up() {
  local t0
  if [ ! -f "$IMG" ] || [ ! -f "$BOOT/xen" ]; then die "no dom0 image (run: lab build)"; fi
  if [ -n "$(qemu_pid)" ]; then
    if dom0 true 2> /dev/null < /dev/null; then log "up: already up (pid $(qemu_pid))"; return 0; fi
    log "up: QEMU running (pid $(qemu_pid)), waiting for ssh"
    wait_ssh "$(stat -c %Y "$PIDFILE")"
    return 0
  fi
  command -v qemu-system-x86_64 > /dev/null || die "qemu-system-x86_64 missing (run: lab deps)"
  qemu_args
  rm -f "$SERIAL" "$PIDFILE"
  mkdir -p "$XFER"
  t0=$(now)
  qemu-system-x86_64 "${QEMU_ARGS[@]}" || die "QEMU failed to start (port $SSH_PORT busy? set VXN_LAB_SSH_PORT)"
  log "up: QEMU pid $(cat "$PIDFILE"), serial $SERIAL; waiting for dom0 ssh (deadline ${BOOT_TIMEOUT}s)"
  wait_ssh "$t0"
}


cmd_logs() {
  local n=${VXN_LAB_LOG_LINES:-40}
  serial_tail "$n" 2>&1
  [ -n "$(qemu_pid)" ] || { echo "(lab is down: no dom0 logs)"; return 0; }
  # shellcheck disable=SC2016 # expanded in dom0
  dom0 "n=$n; "'
    echo "--- journalctl -u containerd (last $n)"; journalctl -u containerd -n "$n" --no-pager 2>&1
    for f in /var/log/xen/xl-*.log /var/log/xen/qemu-dm-*.log /var/log/xen/console/guest-*.log; do
      [ -f "$f" ] || continue
      echo "--- $f (last $n)"; tail -n "$n" "$f" | tr -d "\r"
    done' < /dev/null
}

# push [--test-image] [--no-guest] [FILE...]
cmd_push() {
  local with_guest=1 testimg=0 files=() f
  while [ $# -gt 0 ]; do
    case $1 in
      --test-image) testimg=1 ;;
      --no-guest) with_guest=0 ;;
      -*) die "push: unknown option $1" ;;
      *) files+=("$1") ;;
    esac
    shift
  done
  [ -n "$(qemu_pid)" ] || die "lab is not up (run: lab up)"
  if [ ${#files[@]} = 0 ]; then
    for f in "$HOST_BIN_DIR/containerd-shim-vxn-v2" "$HOST_BIN_DIR/vxnctl" "$HOST_BIN_DIR/vxn-oci-runtime"; do
      [ -f "$f" ] && files+=("$f")
    done
  fi
  # beside the shim, always: vctr (ctr with vxn's runtime) and the engines' installer,
  # which push runs in dom0 (Docker's daemon.json, Podman's containers.conf.d drop-in)
  files+=("$REPO_DIR/scripts/vctr" "$REPO_DIR/scripts/install-engine-config.sh")
  local put=()
  if [ $with_guest = 1 ]; then
    [ -f "$GUEST/initramfs.cpio.gz" ] || die "no guest image (run: lab guest-image)"
    put+=("$GUEST/vmlinuz" "$DOM0_GUEST_DIR/vmlinuz" 0644
          "$GUEST/initramfs.cpio.gz" "$DOM0_GUEST_DIR/initramfs.cpio.gz" 0644)
  fi
  for f in "${files[@]}"; do put+=("$f" "/usr/local/bin/$(basename "$f")" 0755); done
  if [ $testimg = 1 ]; then
    build_test_images
    put+=("$TESTIMG/vxn-test.tar" /root/vxn-test.tar 0644 "$TESTIMG/vxn-test-docker.tar" /root/vxn-test-docker.tar 0644
          "$TESTIMG/busybox.ext4" /root/busybox.ext4 0644)
  fi
  [ ${#put[@]} = 0 ] && { log "push: nothing to push"; return 0; }
  dom0_put "${put[@]}"
  containerd_apply
  if [ $with_guest = 1 ]; then log "push: guest image -> $DOM0_GUEST_DIR"; fi
  for f in "${files[@]}"; do log "push: $f -> /usr/local/bin/$(basename "$f")"; done
  dom0 'install-engine-config.sh > /dev/null' < /dev/null || die "push: install-engine-config.sh failed in dom0"
  log "push: vxn registered as a runtime with Docker and Podman (install-engine-config.sh)"
  if [ $testimg = 1 ]; then
    dom0 'ctr -n default images import /root/vxn-test.tar > /dev/null' < /dev/null
    log "push: test image imported into dom0 containerd (docker.io/library/vxn-test:latest); /root/busybox.ext4"
    push_engine_images
  fi
}

# push_engine_images: the docker-archive test image loaded into Docker and Podman (when
# dom0 has them, and not loaded yet: every boot starts from the built image). The first
# docker call starts dockerd (docker.socket).
push_engine_images() {
  local t0
  t0=$(now)
  # shellcheck disable=SC2016 # expanded in dom0
  dom0 'set -e; img=docker.io/library/vxn-test:latest
    if command -v docker > /dev/null; then
      timeout 300 docker image inspect $img > /dev/null 2>&1 || timeout 300 docker load -q -i /root/vxn-test-docker.tar > /dev/null
    fi
    if command -v podman > /dev/null; then
      timeout 300 podman image exists $img || timeout 300 podman load -q -i /root/vxn-test-docker.tar > /dev/null
    fi' < /dev/null || die "push: loading the test image into docker/podman failed"
  log "push: test image loaded into dom0's docker and podman ($(elapsed "$t0")s)"
}

# smoke: its status is kept in SMOKE_RC (ci tears the lab down either way).
SMOKE_RC=0  # read by lab (ci, smoke)
# shellcheck disable=SC2034
cmd_smoke() { VXNCTL_BIN=${VXNCTL_BIN:-$HOST_BIN_DIR/vxnctl} "$LAB_DIR/smoke.sh" || SMOKE_RC=$?; }

# probe: boot the guest image in dom0 without vxnctl (dom0/agent-probe.sh) and print
# the agent's console output. Needs the guest image and /root/busybox.ext4 pushed.
cmd_probe() {
  [ -n "$(qemu_pid)" ] || die "lab is not up (run: lab up)"
  build_test_images
  dom0_put "$TESTIMG/busybox.ext4" /root/busybox.ext4 0644 "$LAB_DIR/dom0/agent-probe.sh" /root/agent-probe.sh 0755
  dom0 'bash /root/agent-probe.sh' < /dev/null
}

# e2e [TEST...|all|ci]: the shim's end-to-end suite (tests/e2e/shim-e2e.sh) in dom0, through
# real containerd and ctr (default: all; `ci`: the chosen set CI runs). Pushes the shim,
# vxnctl, the guest image, the test image and the suite first.
# `all` and `ci` run under both containerd versions unless VXN_LAB_CONTAINERD names one:
# everything under Debian's 1.6, then under 2.3.4 the shim and CRI suites (`all`) or
# CI's containerd 2 set (`ci`); without the test tools the 2.3.4 part is skipped, said so.
# `all` also runs critest's whole suite for both handlers under each (lab critest both).
# Its status is kept in E2E_RC (ci tears the lab down either way).
E2E_RC=0  # read by lab (ci, e2e)
cmd_e2e_versions() {
  local set=${1:-all}
  if [ $# -gt 1 ] || { [ "$set" != all ] && [ "$set" != ci ]; } || [ -n "${VXN_LAB_CONTAINERD:-}" ]; then
    cmd_e2e "$@"
    return
  fi
  local t0
  t0=$(now)
  LAB_CONTAINERD=1 cmd_e2e "$set"
  echo "lab: e2e.containerd1 $(elapsed "$t0")s"
  if [ "$set" = all ]; then LAB_CONTAINERD=1 e2e_critest; fi
  if tools_available "${CONTAINERD2_TOOLS[@]}"; then
    log "e2e: now under containerd 2.3.4: $set-containerd2"
    t0=$(now)
    LAB_CONTAINERD=2 cmd_e2e "$set-containerd2"
    echo "lab: e2e.containerd2 $(elapsed "$t0")s"
    if [ "$set" = all ]; then LAB_CONTAINERD=2 e2e_critest; fi
  else
    log "e2e: SKIPPED under containerd 2.x: no test tools in $VXN_TOOLS_DIR"
  fi
  # the aarch64 lab's smoke (not in CI: a cold Arm lab is ~13.5 min, CI ~44 min; tests/lab/README.md)
  if [ "$set" = all ] && [ "${VXN_LAB_ARM:-1}" != 0 ]; then
    log "e2e: the aarch64 lab: tests/lab/arm/lab ci (VXN_LAB_ARM=0 skips)"
    t0=$(now)
    "$LAB_DIR/arm/lab" ci || E2E_RC=1
    echo "lab: e2e.aarch64 $(elapsed "$t0")s"
  fi
}
# e2e_critest: critest's whole suite, both handlers side by side, into E2E_RC.
e2e_critest() {
  local t0
  t0=$(now)
  if ! tools_available critest ginkgo; then
    log "e2e: critest SKIPPED: no critest in $VXN_TOOLS_DIR"
    return 0
  fi
  CRITEST_RC=0
  cmd_critest both
  echo "lab: e2e.critest.containerd$LAB_CONTAINERD $(elapsed "$t0")s"
  [ "$CRITEST_RC" = 0 ] || E2E_RC=1
}
# push_suite [FILE...]: what the suites run in dom0 (the shim and its tools, the test
# image, the suites' scripts) and FILEs, to /usr/local/bin.
push_suite() {
  cmd_push --test-image "$HOST_BIN_DIR/containerd-shim-vxn-v2" "$HOST_BIN_DIR/vxn-shim-client" \
    "$HOST_BIN_DIR/vxnctl" "$HOST_BIN_DIR/vxn-crictl" "$REPO_DIR/config/containerd-vxn.toml" \
    "$REPO_DIR/scripts/install-containerd-config.sh" "$REPO_DIR/tests/e2e/shim-e2e.sh" "$REPO_DIR/tests/e2e/e2e-lib.sh" "$REPO_DIR/tests/e2e/network-e2e.sh" \
    "$REPO_DIR/tests/e2e/cri-e2e.sh" "$REPO_DIR/tests/e2e/engine-e2e.sh" "$REPO_DIR/tests/e2e/pool-e2e.sh" "$@"
}
cmd_e2e() {
  local b
  local extra=()
  for b in containerd-shim-vxn-v2 vxn-shim-client vxnctl vxn-crictl; do
    [ -f "$HOST_BIN_DIR/$b" ] || die "e2e: $HOST_BIN_DIR/$b not built (cargo build --profile $LAB_PROFILE)"
  done
  # the engine tests (docker_*, podman_*) need it; without it they fail and say so
  if [ -f "$HOST_BIN_DIR/vxn-oci-runtime" ]; then extra+=("$HOST_BIN_DIR/vxn-oci-runtime")
  else log "e2e: $HOST_BIN_DIR/vxn-oci-runtime not built: the docker_*/podman_* tests will fail"; fi
  push_suite "${extra[@]}"
  local q=() a env=()
  for a in "$@"; do q+=("$(printf '%q' "$a")"); done
  # the suite's knobs (VXN_E2E_CYCLES, VXN_E2E_NET_N, ...) reach dom0
  while IFS='=' read -r a _; do env+=("$a=$(printf '%q' "${!a}")"); done < <(env | grep '^VXN_E2E_[A-Z_]*=')
  dom0 "${env[*]} shim-e2e.sh ${q[*]}" < /dev/null || E2E_RC=$?
}

# bench [RUNS]: ctr run latency vxn vs runc, its phases, shim memory (tests/bench/ctr-run-latency.sh).
# bench net [RUNS] [MIB]: TCP throughput container <-> dom0 and the vif's create cost.
# bench pod [RUNS]: CRI pod start (runp + create + start) and dom0 memory, runc vs vxn; a
#   container's create and start in a running pod, IMG + 16 MiB vs IMG + 1 GiB (VXN_POD_*).
# bench engine [RUNS]: docker/podman run --rm IMG true, vxn-oci-runtime vs runc; dom0 memory.
# bench kernel [RUNS]: Debian's guest kernel vs vxn's: the raw-Xen floor F0, ctr run, agent ready.
# bench density [MAX]: vxn containers of the smallest memory kept running until Xen is full
#   (tests/bench/density-bench.sh).
# bench floor [RUNS]: vxn against its floors: F0 and runc; dom0 memory per container, stdout
#   throughput, create time vs image size (tests/bench/floor-bench.sh).
cmd_bench() {
  local shim=$REPO_DIR/target/release/containerd-shim-vxn-v2
  [ -f "$shim" ] || die "bench: $shim not built (cargo build --release)"
  if [ "${1:-}" = pod ]; then
    shift
    cmd_push --test-image "$shim" "$REPO_DIR/target/release/vxn-crictl" "$REPO_DIR/target/release/vxnctl" "$REPO_DIR/config/containerd-vxn.toml" \
      "$REPO_DIR/scripts/install-containerd-config.sh" "$REPO_DIR/tests/e2e/e2e-lib.sh" "$REPO_DIR/tests/e2e/cri-e2e.sh" "$REPO_DIR/tests/bench/pod-bench.sh" \
      "$REPO_DIR/tests/bench/bench-pool.sh" "$REPO_DIR/tests/bench/bench-images.sh"
    # its knobs (VXN_POD_SIZE, VXN_POD_BIG_MIB) reach dom0
    local a env=()
    while IFS='=' read -r a _; do env+=("$a=$(printf '%q' "${!a}")"); done < <(env | grep '^VXN_POD_[A-Z_]*=')
    dom0 "${env[*]} pod-bench.sh $*" < /dev/null
    return
  fi
  if [ "${1:-}" = engine ] || [ "${1:-}" = engine-net ]; then
    local rt=$REPO_DIR/target/release/vxn-oci-runtime script=$1-bench.sh
    shift
    [ -f "$rt" ] || die "bench: $rt not built (cargo build --release)"
    cmd_push --test-image "$rt" "$REPO_DIR/tests/bench/$script" "$REPO_DIR/tests/bench/tcp-rate.py"
    dom0 "$script $*" < /dev/null
    return
  fi
  if [ "${1:-}" = kernel ]; then
    shift
    guest_image_kind debian
    guest_image_kind vxn
    f0_image
    cmd_push --test-image "$shim" "$REPO_DIR/tests/bench/kernel-bench.sh"
    dom0_put "$GUEST/debian/vmlinuz" "$DOM0_GUEST_DIR/debian/vmlinuz" 0644 \
      "$GUEST/debian/initramfs.cpio.gz" "$DOM0_GUEST_DIR/debian/initramfs.cpio.gz" 0644 \
      "$GUEST/vxn/vmlinuz" "$DOM0_GUEST_DIR/vxn/vmlinuz" 0644 \
      "$GUEST/vxn/initramfs.cpio.gz" "$DOM0_GUEST_DIR/vxn/initramfs.cpio.gz" 0644 \
      "$GUEST/f0-initramfs.cpio.gz" "$DOM0_GUEST_DIR/f0-initramfs.cpio.gz" 0644
    dom0 "kernel-bench.sh $*" < /dev/null
    return
  fi
  if [ "${1:-}" = floor ]; then
    shift
    f0_image
    cmd_push --test-image "$shim" "$REPO_DIR/target/release/vxnctl" "$REPO_DIR/tests/bench/floor-bench.sh" "$REPO_DIR/tests/bench/bench-pool.sh" \
      "$REPO_DIR/tests/bench/bench-images.sh"
    dom0_put "$GUEST/f0-initramfs.cpio.gz" "$DOM0_GUEST_DIR/f0-initramfs.cpio.gz" 0644
    dom0 "floor-bench.sh $*" < /dev/null
    return
  fi
  if [ "${1:-}" = density ]; then
    shift
    cmd_push --test-image "$shim" "$REPO_DIR/tests/bench/density-bench.sh"
    dom0 "density-bench.sh $*" < /dev/null
    return
  fi
  if [ "${1:-}" = critest ]; then
    shift
    critest_bench "$@"
    return
  fi
  if [ "${1:-}" = net ]; then
    shift
    cmd_push --test-image "$shim" "$REPO_DIR/target/release/vxnctl" "$REPO_DIR/tests/bench/network-bench.sh" "$REPO_DIR/tests/bench/tcp-rate.py"
    dom0 "vxnctl network up --dhcp >/dev/null && network-bench.sh $*" < /dev/null
    return
  fi
  cmd_push --test-image "$shim" "$REPO_DIR/tests/bench/ctr-run-latency.sh"
  dom0 "ctr-run-latency.sh $*" < /dev/null
}
