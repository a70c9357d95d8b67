# shellcheck shell=bash
# Settings and helpers shared by the end-to-end suites (shim-e2e.sh, hostile-e2e.sh),
# for either backend: xen (in dom0) or process (VM-less, tests/e2e/vmless.sh).
# Sourced; the suite defines test_NAME functions and calls run_test NAME.

IMG=${VXN_TEST_IMAGE:-docker.io/library/vxn-test:latest}
RT=io.containerd.vxn.v2
NS=default
CTR=(ctr -n "$NS")
BACKEND=${VXN_E2E_BACKEND:-xen}
STATE_DIR=${VXN_STATE_DIR:-/run/vxn}
IMAGE_DIR=${VXN_IMAGE_DIR:-/var/lib/vxn}
CGROUP2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
pass=0
fail=0
failed=()

log() { echo "  $*" >&2; }
# domain ID [NS]: the domain the shim gives container ID of namespace NS.
domain() { vxnctl domain-name "${2:-$NS}" "$1"; }

# The backend's view of domains: exists, destroy behind the shim's back, count.
domain_exists() {
  case $BACKEND in
    xen) xl domid "$1" >/dev/null 2>&1 ;;
    process) [ -d "$CGROUP2/vxn-process/$1" ] ;;
  esac
}
domain_destroy() {
  case $BACKEND in
    xen) xl destroy "$1" ;;
    process) echo 1 > "$CGROUP2/vxn-process/$1/cgroup.kill" ;;
  esac
}
domain_count() {
  case $BACKEND in
    xen) xl list | tail -n +2 | grep -vc '^Domain-0' ;;
    process) find "$CGROUP2/vxn-process" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l ;;
  esac
}
containerd_pid() { pgrep -o -x containerd; }
# containerd_major: 1 or 2, the running containerd's (the one ctr talks to).
containerd_major() { "${CTR[@]}" version 2>/dev/null | awk '/^Server:/ {s=1} s && $1 == "Version:" {sub(/^v/, "", $2); split($2, v, "."); print v[1]; exit}'; }
# containerd_log_since EPOCH: containerd's log lines since then (its journal in dom0, the
# private containerd's file in the VM-less tier).
containerd_log_since() {
  if [ -n "${VXN_CONTAINERD_LOG:-}" ]; then
    cat "$VXN_CONTAINERD_LOG"
  else
    journalctl --no-pager -q -o cat --since "@$1" -u containerd 2>/dev/null
  fi
}
# shim_pid ID: the serving shim of container ID.
shim_pid() { pgrep -f "containerd-shim-vxn-v2 .*-id $1( |$)" | head -1; }
# status_of ID: RUNNING, STOPPED, PAUSED ... as ctr task ls says.
status_of() { "${CTR[@]}" task ls 2>/dev/null | awk -v id="$1" '$1==id {print $3}'; }

# Nothing of container $1 (namespace $2) may remain: domain, shim state, image, mounts, task.
no_leftovers() {
  local id=$1 ns=${2:-$NS} ok=0 d
  d=$(domain "$id" "$ns")
  if domain_exists "$d"; then log "domain $d still exists"; ok=1; fi
  if [ -e "$STATE_DIR/$ns/$id" ]; then log "$STATE_DIR/$ns/$id still exists"; ok=1; fi
  if [ -e "$IMAGE_DIR/$ns/$id" ]; then log "$IMAGE_DIR/$ns/$id still exists"; ok=1; fi
  if grep -q "/$ns/$id/rootfs" /proc/mounts; then log "rootfs of $id still mounted"; ok=1; fi
  if losetup -l -n -O BACK-FILE 2>/dev/null | grep -q "$IMAGE_DIR/$ns/$id/"; then
    log "a loop device of $id is still attached"; ok=1
  fi
  if ctr -n "$ns" task ls -q 2>/dev/null | grep -qx "$id"; then log "task $id still listed"; ok=1; fi
  if vxnctl network leases 2>/dev/null | awk -v o="$ns/$id" '$3 == o {f=1} END {exit !f}'; then
    log "the lease of $ns/$id is still there"; ok=1
  fi
  return $ok
}

cleanup_id() {
  "${CTR[@]}" task kill -s KILL "$1" >/dev/null 2>&1
  "${CTR[@]}" task delete -f "$1" >/dev/null 2>&1
  "${CTR[@]}" container rm "$1" >/dev/null 2>&1
  true
}

# delete_exit ID: `ctr task delete` ID and print the exit code it reports. ctr 1.6 exits 0
# either way and only warns "task ID exit with non-zero exit code N"; no warning means 0.
delete_exit() {
  local err
  err=$("${CTR[@]}" task delete "$1" 2>&1 >/dev/null) || { log "task delete $1: $err"; echo fail; return; }
  if [[ $err =~ exit\ code\ ([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}

# Wait until task $1 has status $2 (RUNNING, STOPPED, ...), up to $3 seconds.
wait_status() {
  local id=$1 want=$2 limit=${3:-120} i
  for ((i = 0; i < limit * 5; i++)); do
    [ "$(status_of "$id")" = "$want" ] && return 0
    sleep 0.2
  done
  log "task $id never reached $want: $("${CTR[@]}" task ls 2>&1 | grep -w "$id")"
  return 1
}

# run_test NAME: run test_NAME, print PASS/FAIL with its time.
run_test() {
  local name=$1 t0=$SECONDS
  if "test_$name"; then
    echo "PASS ${SUITE_PREFIX:-}$name ($((SECONDS - t0))s)"
    pass=$((pass + 1))
  else
    echo "FAIL ${SUITE_PREFIX:-}$name ($((SECONDS - t0))s)"
    fail=$((fail + 1))
    failed+=("$name")
  fi
}
