#!/bin/bash
# The shim's end-to-end suites on this host, without a VM: a private containerd (its own
# root, state and socket; the host's containerd, if any, is not touched) runs
# containerd-shim-vxn-v2 on its test-only "process" backend: vxn-agent as a host process
# in a cgroup of its own, over a socketpair. No isolation: for tests only.
#   1. tests/e2e/shim-e2e.sh with the real agent (stdio, tty, exec, signals, exit codes,
#      events, pause, cleanup after a shim SIGKILL, tenants, capabilities ...);
#   2. tests/e2e/oci-e2e.sh: vxn-oci-runtime, through containerd's runc shim and directly;
#   3. tests/e2e/hostile-e2e.sh with vxn-hostile-agent, a guest that lies, floods and stalls.
# Usage: tests/e2e/vmless.sh [shim|oci|hostile] [TEST...]   (default: all suites, every test)
# Env: VXN_BIN (dir of the built binaries, default target/debug), VXN_VMLESS_RUN
# (/run/vxn-vmless), VXN_VMLESS_DATA (/var/lib/vxn-vmless), VXN_CONTAINERD=1 (the host's
# containerd 1.6, default) or 2 (containerd 2.3.4 with its ctr and runc shim, from
# scripts/lib/tools.sh: the bootstrap protocol and task API v3). Needs root, containerd, ctr.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
BIN=${VXN_BIN:-$REPO/target/debug}
RUN=${VXN_VMLESS_RUN:-/run/vxn-vmless}
DATA=${VXN_VMLESS_DATA:-/var/lib/vxn-vmless}
SUITE=${1:-all}
[ $# -gt 0 ] && shift

log() { echo "vmless: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (containerd, mounts, cgroups)"
for b in containerd-shim-vxn-v2 vxn-agent vxnctl vxn-hostile-agent vxn-oci-runtime; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is not built (cargo build --workspace)"
done
case ${VXN_CONTAINERD:-1} in
  1) ;;
  2)
    # shellcheck source=../../scripts/lib/tools.sh
    . "$REPO/scripts/lib/tools.sh"
    tools=$(tools_unpack "${CONTAINERD2_TOOLS[@]}") || die "containerd 2.x is not available"
    # ctr 2.x prints the server's deprecations (cgroup v1 on a hybrid host) on every call,
    # into the very stderr the tests compare
    export PATH=$tools:$PATH CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 ;;
  *) die "VXN_CONTAINERD=${VXN_CONTAINERD}: 1 or 2" ;;
esac
command -v containerd >/dev/null && command -v ctr >/dev/null || die "containerd and ctr are needed (scripts/install-deps.sh)"
log "containerd $(containerd --version | awk '{print $3}')"

CGROUP2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
[ -n "$CGROUP2" ] || die "no cgroup2 mount: the process backend needs one"

# A fresh start: what an earlier, interrupted run left behind goes first.
stop_containerd() {
  local pid
  pid=$(cat "$RUN/containerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q containerd "/proc/$pid/comm" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}
sweep() {
  stop_containerd
  # Shims and agents of this run's containerd (their command lines name our paths).
  pkill -9 -f "containerd-shim-vxn-v2 .*-address $RUN/" 2>/dev/null || true
  pkill -9 -f "vxn-oci-runtime --root $RUN/" 2>/dev/null || true
  local cg
  for cg in "$CGROUP2"/vxn-process/*/; do
    [ -d "$cg" ] || continue
    echo 1 > "$cg/cgroup.kill" 2>/dev/null || true
    for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
  done
  { grep -o " $RUN/[^ ]*\| $DATA/[^ ]*" /proc/self/mounts || true; } | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$RUN" "$DATA/root"
}
sweep
mkdir -p "$RUN/bin" "$DATA"
trap '[ -n "${VXN_VMLESS_KEEP:-}" ] || sweep' EXIT

ln -s "$BIN/containerd-shim-vxn-v2" "$RUN/bin/containerd-shim-vxn-v2"
ln -s "$BIN/vxnctl" "$RUN/bin/vxnctl"
cat > "$RUN/containerd.toml" <<EOF
version = 2
root = "$DATA/root"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$RUN/containerd.sock"
EOF
write_config() {
  cat > "$RUN/config.toml" <<EOF
hypervisor = "process"
process_agent = "$1"
state_dir = "$RUN/vxn"
image_dir = "$DATA/images"
agent_call_timeout_secs = 10
kill_grace_secs = 5
log_level = "${VXN_VMLESS_LOG:-info}"
[network]
# the process backend has no vif (the agent's network is tested in its own tests)
mode = "none"
EOF
}
write_config "$BIN/vxn-agent"

export PATH=$RUN/bin:$PATH VXN_CONFIG=$RUN/config.toml
containerd --config "$RUN/containerd.toml" > "$RUN/containerd.log" 2>&1 &
echo $! > "$RUN/containerd.pid"
export CONTAINERD_ADDRESS=$RUN/containerd.sock
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr version >/dev/null 2>&1 || { tail -20 "$RUN/containerd.log" >&2; die "containerd did not start"; }

if [ ! -f "$DATA/vxn-test.tar" ]; then
  "$REPO/tests/lab/make-test-image.sh" "$DATA/vxn-test.tar" >/dev/null
fi
ctr -n default images import "$DATA/vxn-test.tar" >/dev/null

export VXN_E2E_BACKEND=process VXN_STATE_DIR=$RUN/vxn VXN_IMAGE_DIR=$DATA/images
export CONTAINERD_STATE=$RUN/containerd VXN_CONTAINERD_LOG=$RUN/containerd.log
rc=0
t0=$SECONDS
if [ "$SUITE" = all ] || [ "$SUITE" = shim ]; then
  "$REPO/tests/e2e/shim-e2e.sh" "$@" || rc=1
  echo "vmless: shim suite $((SECONDS - t0))s"
fi
if [ "$SUITE" = all ] || [ "$SUITE" = oci ]; then
  t1=$SECONDS
  VXN_OCI_RUNTIME=$BIN/vxn-oci-runtime VXN_OCI_ROOT=$RUN/oci "$REPO/tests/e2e/oci-e2e.sh" "$@" || rc=1
  echo "vmless: oci suite $((SECONDS - t1))s"
fi
if [ "$SUITE" = all ] || [ "$SUITE" = hostile ]; then
  t1=$SECONDS
  # The shim reads its config at start: from now on every container gets the hostile agent.
  write_config "$BIN/vxn-hostile-agent"
  "$REPO/tests/e2e/hostile-e2e.sh" "$@" || rc=1
  echo "vmless: hostile suite $((SECONDS - t1))s"
fi
# Nothing may outlive the suites: no agent, no domain cgroup, no shim of ours.
left=$(find "$CGROUP2/vxn-process" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
[ "$left" = 0 ] || { log "$left process domains left: $(ls "$CGROUP2/vxn-process")"; rc=1; }
sleep 1 # a shim exits just after answering its last Shutdown
if pgrep -f "containerd-shim-vxn-v2 .*-address $RUN/" >/dev/null; then
  log "shims left running: $(pgrep -af "containerd-shim-vxn-v2 .*-address $RUN/")"
  rc=1
fi
if pgrep -f "vxn-oci-runtime --root $RUN/" >/dev/null; then
  log "runtime keepers left running: $(pgrep -af "vxn-oci-runtime --root $RUN/")"
  rc=1
fi
[ $rc = 0 ] || { log "containerd log: $RUN/containerd.log (tail below)"; tail -30 "$RUN/containerd.log" >&2; }
exit $rc
